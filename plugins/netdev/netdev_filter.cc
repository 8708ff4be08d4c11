#include "plugins/netdev/netdev_filter.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "daemon/core/filter_ops.h"
#include "daemon/core/knote.h"
#include "daemon/core/reactor.h"
#include "daemon/plugin/plugin_api.h"
#include "daemon/util/mutex.h"
#include "daemon/util/scoped_fd.h"

namespace kqd {
namespace {

constexpr uint32_t kAllNotes = NOTE_LINKUP | NOTE_LINKDOWN | NOTE_LINKINV;

// The flags of interface `index` now, or -1 if there is none.
int64_t CurrentFlags(unsigned index) {
  char name[IF_NAMESIZE];
  if (!if_indextoname(index, name)) return -1;
  ScopedFd s(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return -1;
  ifreq req{};
  std::strncpy(req.ifr_name, name, IF_NAMESIZE - 1);
  if (ioctl(s.get(), SIOCGIFFLAGS, &req) != 0) return -1;
  return static_cast<uint16_t>(req.ifr_flags);
}

// Per knote: the flags last seen, to report data.
struct NetdevState : KnoteState {
  int64_t flags = 0;
};

class NetdevFilter : public FilterOps, public std::enable_shared_from_this<NetdevFilter> {
 public:
  explicit NetdevFilter(Reactor* reactor) : reactor_(reactor) {}
  ~NetdevFilter() override {
    if (token_ > 0) reactor_->RemoveFd(sock_.get(), token_);
  }

  // Opens the rtnetlink socket and starts listening. Returns 0 or an errno.
  int Start() {
    sock_.reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
    if (!sock_) return errno;
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = RTMGRP_LINK;
    if (bind(sock_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return errno;
    std::weak_ptr<NetdevFilter> weak = shared_from_this();
    token_ = reactor_->AddFd(sock_.get(), EPOLLIN, [weak](uint32_t) {
      if (auto self = weak.lock()) self->OnReadable();
    });
    return token_ > 0 ? 0 : static_cast<int>(-token_);
  }

  uint32_t ImpliedFlags() const override { return EV_CLEAR; }

  int Attach(Knote& kn) override {
    if (kn.kev.ident == 0 || kn.kev.ident > UINT32_MAX) return ENXIO;
    int64_t flags = CurrentFlags(static_cast<unsigned>(kn.kev.ident));
    if (flags < 0) return ENXIO;
    auto state = std::make_unique<NetdevState>();
    state->flags = flags;
    kn.state = std::move(state);
    MutexLock l(mu_);
    watched_[static_cast<unsigned>(kn.kev.ident)].knotes.insert(kn.weak_from_this());
    if (!watched_[static_cast<unsigned>(kn.kev.ident)].known) {
      watched_[static_cast<unsigned>(kn.kev.ident)].known = true;
      watched_[static_cast<unsigned>(kn.kev.ident)].running = flags & IFF_RUNNING;
    }
    return 0;
  }

  void Detach(Knote& kn) override {
    MutexLock l(mu_);
    auto it = watched_.find(static_cast<unsigned>(kn.kev.ident));
    if (it == watched_.end()) return;
    it->second.knotes.erase(kn.weak_from_this());
    if (it->second.knotes.empty()) watched_.erase(it);
  }

  // hint: the NOTE_* transitions that just happened, plus the new flags in
  // the upper 32 bits (0 when the core re-evaluates).
  bool Event(Knote& kn, long hint) override {
    uint32_t happened = static_cast<uint32_t>(hint) & kAllNotes;
    if (hint != kHintEvaluate) kn.state_as<NetdevState>()->flags = static_cast<uint64_t>(hint) >> 32;
    kn.kev.fflags |= happened & kn.sfflags;
    kn.kev.data = kn.state_as<NetdevState>()->flags;
    if (kn.kev.fflags & NOTE_LINKINV) kn.kev.flags |= EV_EOF;
    return kn.kev.fflags != 0;
  }

 private:
  struct Watch {
    std::set<std::weak_ptr<Knote>, std::owner_less<std::weak_ptr<Knote>>> knotes;
    bool known = false;
    bool running = false;
  };

  void OnReadable() {
    char buf[16384];
    for (;;) {
      ssize_t n = recv(sock_.get(), buf, sizeof buf, 0);
      if (n < 0) {
        // ENOBUFS: messages were lost; re-read every watched interface.
        if (errno == ENOBUFS) Resync();
        if (errno == EINTR || errno == ENOBUFS) continue;
        return;  // EAGAIN: drained
      }
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, static_cast<size_t>(n));
           h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != RTM_DELLINK) continue;
        auto* info = static_cast<ifinfomsg*>(NLMSG_DATA(h));
        Update(static_cast<unsigned>(info->ifi_index),
               h->nlmsg_type == RTM_DELLINK ? -1 : static_cast<int64_t>(info->ifi_flags));
      }
    }
  }

  void Resync() {
    std::vector<unsigned> indexes;
    {
      MutexLock l(mu_);
      for (const auto& [index, w] : watched_) indexes.push_back(index);
    }
    for (unsigned index : indexes) Update(index, CurrentFlags(index));
  }

  // flags < 0: the interface is gone.
  void Update(unsigned index, int64_t flags) {
    uint32_t happened = 0;
    std::vector<std::weak_ptr<Knote>> targets;
    {
      MutexLock l(mu_);
      auto it = watched_.find(index);
      if (it == watched_.end()) return;
      Watch& w = it->second;
      if (flags < 0) {
        happened = NOTE_LINKINV;
      } else {
        bool running = flags & IFF_RUNNING;
        if (running && !w.running) happened = NOTE_LINKUP;
        if (!running && w.running) happened = NOTE_LINKDOWN;
        w.running = running;
      }
      if (happened == 0) return;
      targets.assign(w.knotes.begin(), w.knotes.end());
    }
    uint64_t shown = flags < 0 ? 0 : static_cast<uint64_t>(flags);
    long hint = static_cast<long>((shown << 32) | happened);
    for (const auto& kn : targets) Knote::Notify(kn, hint);
  }

  Reactor* const reactor_;
  ScopedFd sock_;
  int64_t token_ = 0;
  Mutex mu_;  // taken under a kqueue's lock; knotes are notified without it
  std::map<unsigned, Watch> watched_ GUARDED_BY(mu_);
};

}  // namespace
}  // namespace kqd

extern "C" int kqueued_plugin_init(kqd::PluginHost* host, uint32_t abi_version) {
  if (abi_version != KQUEUED_PLUGIN_ABI_VERSION) return EPROTO;
  auto filter = std::make_shared<kqd::NetdevFilter>(&host->runtime()->reactor());
  if (int err = filter->Start()) return err;
  uint32_t number = 0;
  if (int err = host->RegisterFilter(NETDEV_FILTER_NAME, filter, &number)) return err;
  host->Log(std::string(NETDEV_FILTER_NAME) + " registered as filter " + std::to_string(number));
  return 0;
}
