"""A test run twice: through the library's inline kevent ioctls (the
default) and, as NAME_pointer, with KQUEUE_INLINE=0, which makes the library
use KQ_IOC_KEVENT (the caller's arrays by address) for every call."""

load("@rules_cc//cc:defs.bzl", "cc_test")

def both_kevent_paths_cc_test(name, **kwargs):
    cc_test(name = name, **kwargs)
    env = dict(kwargs.pop("env", {}))
    env["KQUEUE_INLINE"] = "0"
    cc_test(name = name + "_pointer", env = env, **kwargs)
