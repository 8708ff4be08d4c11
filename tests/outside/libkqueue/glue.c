/*
 * Linked into libkqueue's test program by run-libkqueue.sh.
 *
 * On Linux the suite calls libkqueue_drain_pending_close(), libkqueue's
 * hook that frees, synchronously, the kqueues whose descriptor its monitor
 * thread has not yet seen closed. kqueued has nothing pending to drain: a
 * kqueue and its knotes go when the last descriptor of its open file is
 * closed (the device's release), so the hook does nothing here and the
 * test that calls it still checks close() without EV_DELETE.
 */
void libkqueue_drain_pending_close(void);
void libkqueue_drain_pending_close(void) {}
