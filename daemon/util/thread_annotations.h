// Clang's thread-safety analysis attributes (-Wthread-safety), as macros
// that vanish for compilers without them. `bazel build --config=tsa` builds
// with clang and makes every finding an error (scripts/test.sh runs it).
//
//   GUARDED_BY(mu)   a member read or written only with mu held
//   REQUIRES(mu)     a method called with mu held (the *Locked methods)
//   EXCLUDES(mu)     a method that takes mu itself: never call it holding mu
//   ACQUIRE/RELEASE  what lock and unlock functions (and scopes) do
#ifndef KQUEUED_DAEMON_UTIL_THREAD_ANNOTATIONS_H_
#define KQUEUED_DAEMON_UTIL_THREAD_ANNOTATIONS_H_

#if defined(__clang__)
#define KQD_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define KQD_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) KQD_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY KQD_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) KQD_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) KQD_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) KQD_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) KQD_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) KQD_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) KQD_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) KQD_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) KQD_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) KQD_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) KQD_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) KQD_THREAD_ANNOTATION(release_generic_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) KQD_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) KQD_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) KQD_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) KQD_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS KQD_THREAD_ANNOTATION(no_thread_safety_analysis)

#endif  // KQUEUED_DAEMON_UTIL_THREAD_ANNOTATIONS_H_
