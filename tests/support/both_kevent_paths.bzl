"""A test run three times: through the library's default paths (the ABI 4
fast path for the knotes it may collect itself, the inline kevent ioctls for
the rest), as NAME_pointer with KQUEUE_INLINE=0, which makes the library use
KQ_IOC_KEVENT (the caller's arrays by address) for every daemon call, and as
NAME_ioctl with KQUEUE_LOCAL=0, which turns the fast path off (every call
goes to the daemon, as before ABI 4)."""

load("@rules_cc//cc:defs.bzl", "cc_test")

def both_kevent_paths_cc_test(name, **kwargs):
    cc_test(name = name, **kwargs)
    env = dict(kwargs.pop("env", {}))
    pointer_env = dict(env)
    pointer_env["KQUEUE_INLINE"] = "0"
    cc_test(name = name + "_pointer", env = pointer_env, **kwargs)
    ioctl_env = dict(env)
    ioctl_env["KQUEUE_LOCAL"] = "0"
    cc_test(name = name + "_ioctl", env = ioctl_env, **kwargs)
