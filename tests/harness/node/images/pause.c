/*
 * pause: the pod sandbox's process (the image containerd's sandbox_image
 * names). It holds the pod's namespaces open and, as PID 1 of the pod's PID
 * namespace when the namespace is shared, reaps the zombies that orphaned
 * processes leave behind. It exits 0 on SIGINT or SIGTERM, which is how the
 * runtime stops a sandbox.
 *
 * Built by tests/node/images.py:  gcc -static -Os -s -o pause pause.c
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		puts("pause (mnist-serving tests/node)");
		return 0;
	}
	if (getpid() != 1)
		fputs("pause: warning: not running as PID 1\n", stderr);

	/* Every signal stays blocked except the three handled below, so nothing
	 * else can interrupt or end the sandbox. */
	sigset_t blocked;
	sigfillset(&blocked);
	sigdelset(&blocked, SIGINT);
	sigdelset(&blocked, SIGTERM);
	sigdelset(&blocked, SIGCHLD);
	if (sigprocmask(SIG_SETMASK, &blocked, NULL) != 0) {
		perror("pause: sigprocmask");
		return 1;
	}

	struct sigaction on_stop = { .sa_handler = stop };
	struct sigaction on_child = { .sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART };
	sigfillset(&on_stop.sa_mask);
	sigfillset(&on_child.sa_mask);
	if (sigaction(SIGINT, &on_stop, NULL) != 0 || sigaction(SIGTERM, &on_stop, NULL) != 0
	    || sigaction(SIGCHLD, &on_child, NULL) != 0) {
		perror("pause: sigaction");
		return 2;
	}

	for (;;)
		pause();
}
