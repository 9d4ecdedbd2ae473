<?php

declare(strict_types=1);

/*
 * Our Nextcloud app ispmail_password_rules (files/nextcloud/apps/) against STAND-INS, not against
 * Nextcloud: the lab cannot run Nextcloud. The OCP classes and interfaces below have only what the
 * app uses, with the signatures and behaviour of Nextcloud 31's lib/public (nextcloud-deps/ocp,
 * branch stable31). The flow around the listener is the one read in Nextcloud's source and
 * imitated here in a few lines each:
 *   - OC\User\User::setPassword dispatches BeforePasswordUpdatedEvent, then asks the backend;
 *   - ChangePasswordController::changePersonalPassword catches OCP\HintException around it and
 *     answers with getHint();
 *   - password_policy's LengthValidator throws a HintException for a short password;
 *   - the Coordinator calls Application::register, and the dispatcher builds the listener with
 *     its constructor's services when the event comes.
 * What this shows is our app's decisions; whether Nextcloud 31 behaves as imitated is only read,
 * not run.
 *
 * Usage: php password-rules-standins.php APP_DIR   (prints "ok NAME" / "not ok NAME: why" lines,
 * exits 1 when any check failed)
 */

namespace OCP\EventDispatcher {
	class Event {
		public function __construct() {
		}
	}

	interface IEventListener {
		public function handle(Event $event): void;
	}

	interface IEventDispatcher {
		public function dispatchTyped(Event $event): void;
	}
}

namespace OCP {
	class HintException extends \Exception {
		private string $hint;

		public function __construct($message, $hint = '', $code = 0, ?\Exception $previous = null) {
			$this->hint = $hint;
			parent::__construct($message, $code, $previous);
		}

		public function getHint(): string {
			return empty($this->hint) ? $this->message : $this->hint;
		}
	}

	interface IUser {
		public function getUID();

		public function getBackendClassName();

		public function getBackend();
	}
}

namespace OCP\Security\Events {
	use OCP\EventDispatcher\Event;

	class ValidatePasswordPolicyEvent extends Event {
		public function __construct(private string $password) {
			parent::__construct();
		}

		public function getPassword(): string {
			return $this->password;
		}
	}
}

namespace OCP\User\Events {
	use OCP\EventDispatcher\Event;
	use OCP\IUser;

	class BeforePasswordUpdatedEvent extends Event {
		public function __construct(private IUser $user, private string $password, private ?string $recoveryPassword = null) {
			parent::__construct();
		}

		public function getUser(): IUser {
			return $this->user;
		}

		public function getPassword(): string {
			return $this->password;
		}
	}
}

namespace OCP\AppFramework {
	abstract class App {
		public function __construct(private string $appName) {
		}
	}
}

namespace OCP\AppFramework\Bootstrap {
	interface IRegistrationContext {
		public function registerEventListener(string $event, string $listener, int $priority = 0): void;
	}

	interface IBootContext {
	}

	interface IBootstrap {
		public function register(IRegistrationContext $context): void;

		public function boot(IBootContext $context): void;
	}
}

namespace IspmailTest {
	use OCP\AppFramework\Bootstrap\IRegistrationContext;
	use OCP\EventDispatcher\Event;
	use OCP\EventDispatcher\IEventDispatcher;
	use OCP\HintException;
	use OCP\IUser;
	use OCP\Security\Events\ValidatePasswordPolicyEvent;
	use OCP\User\Events\BeforePasswordUpdatedEvent;

	$app = $argv[1] ?? '';
	require $app . '/lib/Listener/PasswordRulesListener.php';
	require $app . '/lib/AppInfo/Application.php';

	/** Calls the listeners of an event's class in order, as Nextcloud's dispatcher does; records events. */
	class Dispatcher implements IEventDispatcher {
		/** @var array<string, list<callable>> */
		private array $listeners = [];
		/** @var list<Event> */
		public array $dispatched = [];

		public function addListener(string $event, callable $listener): void {
			$this->listeners[$event][] = $listener;
		}

		public function dispatchTyped(Event $event): void {
			$this->dispatched[] = $event;
			foreach ($this->listeners[get_class($event)] ?? [] as $listener) {
				$listener($event);
			}
		}

		/** @return list<string> the passwords the policy was asked about */
		public function policyChecks(): array {
			$events = array_filter($this->dispatched, fn ($e) => $e instanceof ValidatePasswordPolicyEvent);
			return array_values(array_map(fn ($e) => $e->getPassword(), $events));
		}
	}

	/** password_policy with minLength 12: its LengthValidator's message and hint. */
	function passwordPolicy(ValidatePasswordPolicyEvent $event): void {
		if (strlen($event->getPassword()) < 12) {
			throw new HintException('Password needs to be at least 12 characters long.', 'Password needs to be at least 12 characters long.');
		}
	}

	/** A user backend: its name, and the stored hash checked with password_verify as the SQL raw app does. */
	class Backend {
		/** @var list<string> */
		public array $calls = [];
		private string $hash;

		public function __construct(private string $name, string $password) {
			$this->hash = password_hash($password, PASSWORD_DEFAULT);
		}

		public function getBackendName() {
			return $this->name;
		}

		public function checkPassword($uid, $password) {
			$this->calls[] = "checkPassword $uid";
			return password_verify($password, $this->hash) ? $uid : false;
		}

		public function setPassword($uid, $password) {
			$this->calls[] = "setPassword $uid";
			$this->hash = password_hash($password, PASSWORD_DEFAULT);
			return true;
		}
	}

	/** OC\User\User as far as a password change goes. */
	class User implements IUser {
		public function __construct(private string $uid, private Backend $backend, private Dispatcher $dispatcher) {
		}

		public function getUID() {
			return $this->uid;
		}

		public function getBackendClassName() {
			return $this->backend->getBackendName();
		}

		public function getBackend() {
			return $this->backend;
		}

		public function setPassword($password, $recoveryPassword = null) {
			$this->dispatcher->dispatchTyped(new BeforePasswordUpdatedEvent($this, $password, $recoveryPassword));
			return $this->backend->setPassword($this->uid, $password) !== false;
		}
	}

	/** What Settings > Security answers (ChangePasswordController::changePersonalPassword). */
	function changePersonalPassword(User $user, string $new): string {
		try {
			if ($user->setPassword($new) === false) {
				return 'Unable to change personal password';
			}
		} catch (HintException $e) {
			return $e->getHint();
		}
		return 'Saved';
	}

	class Registrations implements IRegistrationContext {
		/** @var list<array{string, string, int}> */
		public array $listeners = [];

		public function registerEventListener(string $event, string $listener, int $priority = 0): void {
			$this->listeners[] = [$event, $listener, $priority];
		}
	}

	/**
	 * A server with the app registered (and password_policy, unless $withPolicy is false), and a user
	 * of backend $backendName whose current password is $current.
	 *
	 * @return array{User, Backend, Dispatcher}
	 */
	function server(string $backendName, string $current, bool $withPolicy = true): array {
		$dispatcher = new Dispatcher();
		if ($withPolicy) {
			$dispatcher->addListener(ValidatePasswordPolicyEvent::class, fn ($e) => passwordPolicy($e));
		}
		$registrations = new Registrations();
		(new \OCA\IspmailPasswordRules\AppInfo\Application())->register($registrations);
		foreach ($registrations->listeners as [$event, $class]) {
			// Built with its constructor's services when the event comes (ServiceEventListener).
			$dispatcher->addListener($event, fn ($e) => (new $class($dispatcher))->handle($e));
		}
		$backend = new Backend($backendName, $current);
		return [new User('alice@example.org', $backend, $dispatcher), $backend, $dispatcher];
	}

	$checks = [];
	$check = function (string $name, callable $body) use (&$checks): void {
		try {
			$why = $body();
		} catch (\Throwable $e) {
			$why = get_class($e) . ': ' . $e->getMessage();
		}
		$checks[] = $why === null ? "ok $name" : "not ok $name: $why";
	};
	$expect = fn ($actual, $expected, string $what) => $actual === $expected ? null : "$what: expected " . var_export($expected, true) . ', got ' . var_export($actual, true);

	$check('the app registers its listener for BeforePasswordUpdatedEvent', function () use ($expect) {
		$registrations = new Registrations();
		(new \OCA\IspmailPasswordRules\AppInfo\Application())->register($registrations);
		return $expect($registrations->listeners, [[BeforePasswordUpdatedEvent::class, \OCA\IspmailPasswordRules\Listener\PasswordRulesListener::class, 0]], 'registered listeners');
	});

	$check('mail user: a password shorter than 12 characters is refused with the policy\'s hint, nothing stored', function () use ($expect) {
		[$user, $backend, $dispatcher] = server('SQL raw', 'old password 2024');
		return $expect(changePersonalPassword($user, 'short pw 1'), 'Password needs to be at least 12 characters long.', 'answer')
			?? $expect($backend->calls, [], 'backend calls')
			?? $expect($dispatcher->policyChecks(), ['short pw 1'], 'policy asked about');
	});

	$check('mail user: the current password again is refused with our hint, nothing stored', function () use ($expect) {
		[$user, $backend] = server('SQL raw', 'old password 2024');
		return $expect(changePersonalPassword($user, 'old password 2024'), 'Choose a password other than your current one.', 'answer')
			?? $expect($backend->calls, ['checkPassword alice@example.org'], 'backend calls');
	});

	$check('mail user: a new password of 12 characters is stored after one policy check of it', function () use ($expect) {
		[$user, $backend, $dispatcher] = server('SQL raw', 'old password 2024');
		return $expect(changePersonalPassword($user, 'twelve chars'), 'Saved', 'answer')
			?? $expect($backend->calls, ['checkPassword alice@example.org', 'setPassword alice@example.org'], 'backend calls')
			?? $expect($dispatcher->policyChecks(), ['twelve chars'], 'policy asked about')
			?? $expect($backend->checkPassword('alice@example.org', 'twelve chars'), 'alice@example.org', 'new password works');
	});

	$check('mail user: after a change the old password counts as a new one again', function () use ($expect) {
		[$user] = server('SQL raw', 'old password 2024');
		return $expect(changePersonalPassword($user, 'new password 2025'), 'Saved', 'first change')
			?? $expect(changePersonalPassword($user, 'new password 2025'), 'Choose a password other than your current one.', 'the same again')
			?? $expect(changePersonalPassword($user, 'old password 2024'), 'Saved', 'back to the old one');
	});

	$check('Nextcloud\'s own users (backend Database, which asks the policy itself) are left alone', function () use ($expect) {
		[$user, $backend, $dispatcher] = server('Database', 'admin password 1');
		return $expect(changePersonalPassword($user, 'admin password 1'), 'Saved', 'answer')
			?? $expect($backend->calls, ['setPassword alice@example.org'], 'backend calls')
			?? $expect($dispatcher->policyChecks(), [], 'policy asked about');
	});

	$check('without password_policy enabled only the current-password rule holds (a short one passes)', function () use ($expect) {
		[$user] = server('SQL raw', 'old password 2024', false);
		return $expect(changePersonalPassword($user, 'short'), 'Saved', 'a short password')
			?? $expect(changePersonalPassword($user, 'short'), 'Choose a password other than your current one.', 'the same again');
	});

	$check('other events are ignored', function () use ($expect) {
		$dispatcher = new Dispatcher();
		(new \OCA\IspmailPasswordRules\Listener\PasswordRulesListener($dispatcher))->handle(new Event());
		return $expect($dispatcher->dispatched, [], 'dispatched');
	});

	echo implode("\n", $checks), "\n";
	exit(count(array_filter($checks, fn ($c) => str_starts_with($c, 'not ok'))) === 0 ? 0 : 1);
}
