-- ispmail: an authenticated user may only send with a From header that is the envelope sender.
--
-- Postfix checks the envelope sender against the directory (smtpd_sender_login_maps +
-- reject_authenticated_sender_login_mismatch on 587/465), but never looks at the From: header, which is what recipients
-- see and what DMARC aligns with. Requiring From == MAIL FROM for authenticated mail extends the
-- ownership check to the header. Unauthenticated and local (sendmail) mail is left alone.
local rspamd_logger = require "rspamd_logger"
local lua_util = require "lua_util"

rspamd_config:register_symbol({
  name = 'ISPMAIL_FROM_NOT_OWNED',
  type = 'prefilter',
  priority = lua_util.symbols_priorities.high,
  group = 'ispmail',
  description = 'Authenticated sender used a From header that differs from its envelope sender',
  callback = function(task)
    local user = task:get_user()
    if not user then
      return false
    end
    local envelope = task:get_from('smtp')
    local header = task:get_from('mime')
    local env_addr = envelope and envelope[1] and envelope[1].addr or ''
    local ok = header and #header == 1 and env_addr ~= '' and
        string.lower(header[1].addr or '') == string.lower(env_addr)
    if ok then
      return false
    end
    rspamd_logger.infox(task, 'user %s: From header does not match envelope sender %s', user, env_addr)
    task:insert_result('ISPMAIL_FROM_NOT_OWNED', 1.0)
    task:set_pre_result('reject', 'From header must be your own address (the envelope sender)', 'ispmail')
    return true
  end,
})
