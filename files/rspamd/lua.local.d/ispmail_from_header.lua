-- ispmail: a sender may only use a From header that is its own address (the envelope sender).
--
-- Postfix checks the envelope sender against the directory (smtpd_sender_login_maps +
-- reject_authenticated_sender_login_mismatch on 587/465), but never looks at the From: header, which is what recipients
-- see and what DMARC aligns with. Requiring From == MAIL FROM for authenticated mail extends the
-- ownership check to the header. Mail from other servers is DMARC's business; mail submitted on
-- the server itself has its own rule below.
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

-- Mail the server submits itself (sendmail, or SMTP from loopback without a login): Sieve
-- vacation and notify replies, redirects, Nextcloud, root's alerts. Rspamd DKIM-signs it
-- (sign_local) for whatever From header it carries, and a Sieve script chooses that header freely
-- (`vacation :from "ceo@example.org"`), so a user could have the server sign replies in anyone's
-- name. For a From in a domain we sign for, the envelope sender must be that same address:
-- Dovecot sends vacation replies and redirects with the script owner's address as envelope
-- sender (sieve_vacation_send_from_recipient, sieve_redirect_envelope_from), Nextcloud and root
-- send with their From as envelope sender. A redirect keeps the original's From, so it passes
-- when Pigeonhole's own X-Sieve-Redirected-From names the envelope sender (Sieve scripts cannot
-- set that header: editheader refuses it, redirect replaces it). Postfix's own notices with an
-- empty envelope (postmaster, MAILER-DAEMON) pass as well. Everything else is refused: Postfix
-- returns it to its envelope sender (the user whose script wrote it) with the reason, and the
-- delivery that triggered it is not affected.
local rspamd_util = require "rspamd_util"

local signed_domains = {}
local dkim_opts = rspamd_config:get_all_opt('dkim_signing') or {}
for domain, _ in pairs(dkim_opts.domain or {}) do
  signed_domains[string.lower(domain)] = true
end

local function signed_for(domain)
  domain = string.lower(domain or '')
  if domain == '' then
    return false
  end
  -- Rspamd signs subdomains with their eSLD's key (use_esld), so check that too.
  return signed_domains[domain] or signed_domains[string.lower(rspamd_util.get_tld(domain) or '')] or false
end

local function address_in(header_value)
  local addr = header_value and string.match(header_value, '<([^>]+)>') or header_value
  return string.lower((addr or ''):gsub('^%s+', ''):gsub('%s+$', ''))
end

rspamd_config:register_symbol({
  name = 'ISPMAIL_LOCAL_FROM_NOT_OWNED',
  type = 'prefilter',
  priority = lua_util.symbols_priorities.high,
  group = 'ispmail',
  description = 'Mail submitted on the server itself carries a From header of ours that is not its envelope sender',
  callback = function(task)
    if task:get_user() then
      return false
    end
    local ip = task:get_from_ip()
    if not (ip and ip:is_valid() and ip:is_local()) then
      return false
    end
    local header = task:get_from('mime')
    if not (header and header[1]) then
      return false
    end
    local from_addr = string.lower(header[1].addr or '')
    if not signed_for(header[1].domain) then
      return false
    end
    local envelope = task:get_from('smtp')
    local env_addr = string.lower(envelope and envelope[1] and envelope[1].addr or '')
    if #header == 1 and env_addr ~= '' and from_addr == env_addr then
      return false
    end
    if env_addr ~= '' and address_in(task:get_header('X-Sieve-Redirected-From')) == env_addr then
      return false
    end
    local user_part = string.lower(header[1].user or '')
    if env_addr == '' and (user_part == 'postmaster' or user_part == 'mailer-daemon') then
      return false
    end
    rspamd_logger.infox(task, 'local mail: From %s is not its envelope sender <%s>', from_addr, env_addr)
    task:insert_result('ISPMAIL_LOCAL_FROM_NOT_OWNED', 1.0, from_addr)
    task:set_pre_result('reject', 'From header must be the sender\'s own address (the envelope sender)', 'ispmail')
    return true
  end,
})
