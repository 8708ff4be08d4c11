// kqueue_demo: BSD kqueue from Go through kqueued's device, with nothing but
// the standard library (syscall, unsafe). It opens the device, registers a
// periodic EVFILT_TIMER and an EVFILT_READ on a pipe with raw ioctls
// (docs/abi.md), writes to the pipe, and prints the events as they arrive:
//
//	go run examples/go/kqueue_demo.go          # $KQUEUE_DEVICE or /dev/kqueue
//
// It stops after the pipe's event and three timer expirations.
package main

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// proto/kqueue_abi.h, for 64-bit Linux.
const (
	kqIocKevent  = 0xC0386B40 // _IOWR('k', 0x40, struct kq_kevent_args)
	kqIocVersion = 0x80406B41 // _IOR('k', 0x41, struct kq_version)

	evfiltRead  = 0
	evfiltTimer = 6

	evAdd   = 0x0001
	evClear = 0x0020
	evEOF   = 0x8000
	evError = 0x4000

	kqKeventTimeout = 0x1 // timeout_sec/nsec are valid
	kqKeventKqfd    = 0x2 // kq_fd names this kqueue's descriptor
)

// struct kq_kevent (40 bytes): NetBSD's LP64 struct kevent.
type kevent struct {
	Ident    uint64
	Filter   uint32
	Flags    uint32
	Fflags   uint32
	Reserved uint32
	Data     int64
	Udata    uint64
}

// struct kq_kevent_args (56 bytes): kevent(2)'s arguments.
type keventArgs struct {
	Changelist  uint64
	Nchanges    uint64
	Eventlist   uint64
	Nevents     uint64
	TimeoutSec  int64
	TimeoutNsec int64
	Flags       uint32
	KqFd        int32
}

// struct kq_version (64 bytes).
type version struct {
	AbiVersion    uint32
	Reserved      uint32
	DaemonVersion [56]byte
}

// The daemon reads and writes these through their addresses while the ioctl
// runs: package-level variables stay put (a goroutine's stack may move).
var (
	changes [2]kevent
	events  [8]kevent
	args    keventArgs
	ver     version
)

func ioctl(fd int, req uintptr, arg unsafe.Pointer) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

// kev is kevent(2): apply nchanges of `changes`, collect up to len(events).
// The Go runtime signals its threads (preemption), and the daemon answers a
// signalled wait with EINTR, as kevent(2) does: wait again.
func kev(kq int, nchanges int, timeoutMs int64) (int, error) {
	for {
		args = keventArgs{
			Changelist:  uint64(uintptr(unsafe.Pointer(&changes[0]))),
			Nchanges:    uint64(nchanges),
			Eventlist:   uint64(uintptr(unsafe.Pointer(&events[0]))),
			Nevents:     uint64(len(events)),
			TimeoutSec:  timeoutMs / 1000,
			TimeoutNsec: (timeoutMs % 1000) * 1000000,
			Flags:       kqKeventTimeout | kqKeventKqfd,
			KqFd:        int32(kq),
		}
		n, err := ioctl(kq, kqIocKevent, unsafe.Pointer(&args))
		if err == syscall.EINTR && nchanges == 0 {
			continue
		}
		return n, err
	}
}

func main() {
	device := os.Getenv("KQUEUE_DEVICE")
	if device == "" {
		device = "/dev/kqueue"
	}
	kq, err := syscall.Open(device, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "open %s: %v (is kqueued running?)\n", device, err)
		os.Exit(1)
	}
	defer syscall.Close(kq)
	if _, err := ioctl(kq, kqIocVersion, unsafe.Pointer(&ver)); err != nil {
		fmt.Fprintf(os.Stderr, "%s is not a kqueue device: %v\n", device, err)
		os.Exit(1)
	}
	name := ver.DaemonVersion[:]
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	fmt.Printf("device %s: %s, ABI %d\n", device, name, ver.AbiVersion)

	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, "pipe:", err)
		os.Exit(1)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])

	// A 50 ms periodic timer (ident 1) and the pipe's read end.
	changes[0] = kevent{Ident: 1, Filter: evfiltTimer, Flags: evAdd, Data: 50, Udata: 0x7431}
	changes[1] = kevent{Ident: uint64(p[0]), Filter: evfiltRead, Flags: evAdd | evClear, Udata: 0x7032}
	n, err := kev(kq, 2, 0)
	if err != nil || n != 0 {
		fmt.Fprintf(os.Stderr, "register: %d %v\n", n, err)
		os.Exit(1)
	}
	fmt.Println("registered: EVFILT_TIMER ident 1 every 50 ms, EVFILT_READ on the pipe")
	if _, err := syscall.Write(p[1], []byte("hello")); err != nil {
		fmt.Fprintln(os.Stderr, "write:", err)
		os.Exit(1)
	}

	timers, reads := 0, 0
	for timers < 3 || reads < 1 {
		n, err := kev(kq, 0, 2000)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kevent:", err)
			os.Exit(1)
		}
		if n == 0 {
			fmt.Fprintln(os.Stderr, "kevent: timed out")
			os.Exit(1)
		}
		for _, e := range events[:n] {
			switch {
			case e.Flags&evError != 0:
				fmt.Fprintf(os.Stderr, "error on ident %d: %v\n", e.Ident, syscall.Errno(e.Data))
				os.Exit(1)
			case e.Filter == evfiltTimer:
				timers++
				fmt.Printf("EVFILT_TIMER ident %d expirations %d udata %#x\n", e.Ident, e.Data, e.Udata)
			case e.Filter == evfiltRead:
				reads++
				fmt.Printf("EVFILT_READ ident %d bytes %d eof %v udata %#x\n", e.Ident, e.Data,
					e.Flags&evEOF != 0, e.Udata)
			}
		}
	}
	fmt.Println("done")
}
