<?php

declare(strict_types=1);

/*
 * ispmail: the rules for a password that a mail user chooses in Nextcloud, the same as in the
 * webmail: the password policy (at least 12 characters, set by the nextcloud step) and not the
 * current password.
 *
 * Nextcloud's own user database asks the policy itself (OC\User\Database::setPassword dispatches
 * ValidatePasswordPolicyEvent); the SQL raw backend (user_backend_sql_raw: the mail directory)
 * does not, so this listener asks for it, for users of that backend only. Both refusals are an
 * OCP\HintException, thrown before the backend stores anything: Settings > Security
 * (ChangePasswordController::changePersonalPassword) shows its hint, the provisioning API
 * (UsersController::editUser) answers with its message.
 */

namespace OCA\IspmailPasswordRules\Listener;

use OCP\EventDispatcher\Event;
use OCP\EventDispatcher\IEventDispatcher;
use OCP\EventDispatcher\IEventListener;
use OCP\HintException;
use OCP\Security\Events\ValidatePasswordPolicyEvent;
use OCP\User\Events\BeforePasswordUpdatedEvent;

/**
 * @template-implements IEventListener<BeforePasswordUpdatedEvent>
 */
class PasswordRulesListener implements IEventListener {
	/** What user_backend_sql_raw's UserBackend::getBackendName() returns (IUser::getBackendClassName). */
	public const SQL_RAW_BACKEND = 'SQL raw';

	public function __construct(
		private IEventDispatcher $eventDispatcher,
	) {
	}

	public function handle(Event $event): void {
		if (!($event instanceof BeforePasswordUpdatedEvent)) {
			return;
		}
		$user = $event->getUser();
		if ($user->getBackendClassName() !== self::SQL_RAW_BACKEND) {
			return;
		}
		$password = $event->getPassword();

		// The password_policy app's listener throws a HintException with its hints.
		$this->eventDispatcher->dispatchTyped(new ValidatePasswordPolicyEvent($password));

		// Asked of the backend, not of IUserManager::checkPassword: that one logs a wrong password as
		// "Login failed: ..." with the client's address, which the fail2ban jail nextcloud counts, and
		// every accepted change would be one.
		$backend = $user->getBackend();
		if ($backend !== null && method_exists($backend, 'checkPassword')
			&& $backend->checkPassword($user->getUID(), $password) !== false) {
			throw new HintException(
				'The new password is the current password.',
				'Choose a password other than your current one.',
			);
		}
	}
}
