#include "common/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "common/status.h"
#include "common/util.h"

namespace tpc::failpoint {

const char* const k_names[] = {"participant/beforePrepareFsync",
                               "participant/afterPrepareFsync",
                               "participant/afterVoteSend",
                               "participant/beforeApplyCommit",
                               "participant/afterApplyCommit",
                               "leader/afterVotes",
                               "leader/beforeDecisionFsync",
                               "leader/afterDecisionFsync",
                               "leader/betweenCommitSends",
                               "leader/beforeEndRecord",
                               "leader/sendCommit",
                               "leader/beforeMembershipFsync",
                               "leader/afterMembershipFsync",
                               "leader/sendSyncPage",
                               "participant/askOutcome",
                               "txlog/write",
                               "txlog/sync",
                               nullptr};

namespace detail {
std::atomic<bool> g_any{false};
}

namespace {
Hook g_hook;  // set_hook()
struct Term {
  int percent = 100;
  int count = -1;  // -1: unlimited
  std::string action;
  std::string arg;
};
std::mutex g_mutex;
std::map<std::string, std::vector<Term>, std::less<>> g_points;

bool parse_int(const std::string& s, int* out) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  *out = std::atoi(s.c_str());
  return true;
}

std::string parse_term(std::string t, Term* out) {
  auto pct = t.find('%');
  if (pct != std::string::npos) {
    if (!parse_int(t.substr(0, pct), &out->percent) || out->percent > 100)
      return "bad percentage in '" + t + "'";
    t = t.substr(pct + 1);
  }
  auto star = t.find('*');
  if (star != std::string::npos) {
    if (!parse_int(t.substr(0, star), &out->count)) return "bad count in '" + t + "'";
    t = t.substr(star + 1);
  }
  auto paren = t.find('(');
  if (paren != std::string::npos) {
    if (t.back() != ')') return "missing ')' in '" + t + "'";
    out->arg = t.substr(paren + 1, t.size() - paren - 2);
    t = t.substr(0, paren);
  }
  out->action = t;
  int ms;
  if (t == "sleep" && !parse_int(out->arg, &ms)) return "sleep needs milliseconds: sleep(500)";
  if (t == "error" && out->arg != "EIO" && out->arg != "ENOSPC" && !out->arg.empty())
    return "error takes EIO or ENOSPC";
  if (t != "off" && t != "crash" && t != "sleep" && t != "error" && t != "print")
    return "unknown action '" + t + "'";
  return {};
}
}  // namespace

std::string configure(const std::string& spec) {
  std::map<std::string, std::vector<Term>, std::less<>> points;
  for (const std::string& item : split_list(spec, ';')) {
    auto eq = item.find('=');
    if (eq == std::string::npos) return "expected NAME=ACTION in '" + item + "'";
    std::string name = item.substr(0, eq);
    bool known = false;
    for (auto* n = k_names; *n; ++n) known |= name == *n;
    if (!known) return "unknown failpoint '" + name + "'";
    std::string rest = item.substr(eq + 1);
    std::vector<Term> terms;
    size_t p = 0;
    while (true) {
      size_t arrow = rest.find("->", p);
      Term term;
      auto err = parse_term(
          rest.substr(p, arrow == std::string::npos ? std::string::npos : arrow - p), &term);
      if (!err.empty()) return name + ": " + err;
      terms.push_back(term);
      if (arrow == std::string::npos) break;
      p = arrow + 2;
    }
    points[name] = std::move(terms);
  }
  std::lock_guard<std::mutex> g(g_mutex);
  g_points = std::move(points);
  detail::g_any = g_hook || !g_points.empty();
  return {};
}

void configure_from_env() {
  const char* v = std::getenv("TPC_FAILPOINTS");
  if (!v || !*v) return;
  auto err = configure(v);
  if (!err.empty()) throw Error("TPC_FAILPOINTS: " + err, 2);
  log::warn("failpoints enabled: {}", v);
}

void set_hook(Hook hook) {
  g_hook = std::move(hook);
  std::lock_guard<std::mutex> g(g_mutex);
  detail::g_any = g_hook || !g_points.empty();
}

namespace detail {
int eval(std::string_view name, std::string_view txid) {
  if (g_hook) return g_hook(name, txid);
  Term fired;
  {
    std::lock_guard<std::mutex> g(g_mutex);
    auto it = g_points.find(name);
    if (it == g_points.end()) return 0;
    auto& terms = it->second;
    while (!terms.empty() && terms.front().count == 0) terms.erase(terms.begin());
    if (terms.empty()) return 0;
    Term& t = terms.front();
    if (t.percent < 100) {
      static std::mt19937 rng{std::random_device{}()};
      if (static_cast<int>(rng() % 100) >= t.percent) return 0;
    }
    if (t.count > 0) --t.count;
    fired = t;
  }
  if (fired.action == "off") return 0;
  log::write(log::Level::warn,
             fmt::format("failpoint {} fired txid={} action={}", name, txid, fired.action));
  if (fired.action == "crash") {
    ::kill(::getpid(), SIGKILL);
    ::_exit(137);
  }
  if (fired.action == "sleep") {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(fired.arg.c_str())));
  }
  if (fired.action == "error") return fired.arg == "ENOSPC" ? ENOSPC : EIO;
  return 0;
}
}  // namespace detail

}  // namespace tpc::failpoint
