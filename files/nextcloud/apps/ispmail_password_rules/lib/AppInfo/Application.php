<?php

declare(strict_types=1);

/*
 * ispmail: Nextcloud registers every enabled app whose OCA\<namespace>\AppInfo\Application
 * implements IBootstrap (lib/private/AppFramework/Bootstrap/Coordinator.php), then hands the
 * listeners registered here to its event dispatcher; the listener is built only when its event
 * is dispatched.
 */

namespace OCA\IspmailPasswordRules\AppInfo;

use OCA\IspmailPasswordRules\Listener\PasswordRulesListener;
use OCP\AppFramework\App;
use OCP\AppFramework\Bootstrap\IBootContext;
use OCP\AppFramework\Bootstrap\IBootstrap;
use OCP\AppFramework\Bootstrap\IRegistrationContext;
use OCP\User\Events\BeforePasswordUpdatedEvent;

class Application extends App implements IBootstrap {
	public const APP_ID = 'ispmail_password_rules';

	public function __construct() {
		parent::__construct(self::APP_ID);
	}

	public function register(IRegistrationContext $context): void {
		// OC\User\User::setPassword dispatches this before it asks the user's backend to store the
		// password; an exception thrown by a listener stops the change there.
		$context->registerEventListener(BeforePasswordUpdatedEvent::class, PasswordRulesListener::class);
	}

	public function boot(IBootContext $context): void {
	}
}
