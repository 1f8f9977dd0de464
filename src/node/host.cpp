#include "node/host.h"

#include <fmt/format.h>

#include "common/logging.h"
#include "common/util.h"

namespace tpc::node {

namespace asio = boost::asio;
using protocol::escape;
using protocol::LineBuilder;

namespace {
// Whether `word` is one of the space-separated words of `words` (no allocation: per request).
bool has_word(std::string_view words, std::string_view word) {
  while (!words.empty()) {
    size_t end = words.find(' ');
    if (words.substr(0, end) == word) return true;
    if (end == std::string_view::npos) break;
    words.remove_prefix(end + 1);
  }
  return false;
}
}  // namespace

std::string refusal(const Verb& verb, const protocol::PeerInfo& peer) {
  if (verb.roles.empty()) return "";
  if (peer.role.empty())
    return fmt::format("{} needs a HELLO first (role {})", verb.name, verb.roles);
  if (!has_word(verb.roles, peer.role))
    return fmt::format("{} is not for role {} (only {})", verb.name, escape(peer.role), verb.roles);
  if (verb.needs_join && peer.role == "leader" && !peer.joined)
    return fmt::format("{} only from the leader that admitted this participant (JOIN)", verb.name);
  return "";
}

Host::Host(asio::io_context& io, HostConfig cfg, const Identity& ident, std::function<void()> tick)
    : m_io(io),
      m_cfg(std::move(cfg)),
      m_ident(ident),
      m_started_ms(now_ms()),
      m_wake(io, std::move(tick)) {
  protocol::SessionConfig sc{m_cfg.role,
                             m_cfg.id,
                             m_cfg.max_message,
                             m_cfg.max_connections,
                             [&ident](const std::string& l) { return answer_hello(ident, l); },
                             m_cfg.idle_timeout_ms,
                             m_cfg.tls};
  if (!m_cfg.metrics_addr.empty()) {
    m_metrics = std::make_unique<metrics::NodeMetrics>(m_cfg.role, m_cfg.id);
    sc.accepted = &m_metrics->accepted;
    sc.refused = &m_metrics->refused;
  }
  m_server = std::make_unique<protocol::Server>(
      io, m_cfg.bind, m_cfg.port, sc,
      [this](const std::string& l, protocol::Reply r) { dispatch(l, r); });
}

Host::~Host() { stop(); }

void Host::serve(std::vector<Verb> verbs) {
  m_verbs = std::move(verbs);
  m_verb_names.clear();
  for (auto& v : m_verbs) m_verb_names += (m_verb_names.empty() ? "" : ", ") + std::string(v.name);
}

void Host::dispatch(const std::string& line, protocol::Reply reply) {
  auto t = protocol::split(line);
  auto fail = [&](const char* code, const std::string& why) {
    reply.send(LineBuilder("ERR").raw(code).text(why).str());
  };
  if (t.empty()) return fail("PROTO", "empty request");
  const Verb* verb = nullptr;
  for (auto& v : m_verbs)
    if (v.name == t[0]) {
      verb = &v;
      break;
    }
  if (!verb)
    return fail("PROTO", fmt::format("unknown command {} (a {} serves {}, PING)", escape(t[0]),
                                     m_cfg.role, m_verb_names));
  const auto& peer = reply.peer();
  if (std::string why = refusal(*verb, peer); !why.empty()) {
    log::warn("refused {} from {} ({}role {}, id {}, node {}): {}", verb->name, peer.address,
              peer.cert.empty() ? "" : "certificate '" + escape(peer.cert) + "', ",
              peer.role.empty() ? "-" : escape(peer.role), escape(peer.id), escape(peer.node), why);
    return fail("DENIED", why);
  }
  verb->run(t, std::move(reply));
}

int64_t Host::uptime_ms() const { return now_ms() - m_started_ms; }

Stats Host::stats() const {
  Stats s;
  s.role = m_cfg.role;
  s.id = m_cfg.id;
  s.cluster = m_ident.cluster;
  s.node = m_ident.node;
  s.uptime_ms = uptime_ms();
  return s;
}

ClientId Host::wait(protocol::Reply reply, bool counted) {
  ClientId id = m_next_client++;
  m_waiting.emplace(id, Waiting{std::move(reply), m_metrics ? now_us() : 0, counted});
  return id;
}

std::optional<Host::Waiting> Host::take(ClientId id) {
  auto it = m_waiting.find(id);
  if (it == m_waiting.end()) return std::nullopt;
  Waiting w = std::move(it->second);
  m_waiting.erase(it);
  return w;
}

void Host::post(std::function<void()> f) {
  asio::post(m_io, [this, f = std::move(f)] {
    if (!m_stopped) f();
  });
}

void Host::after(int64_t ms, std::function<void()> f) {
  auto timer = std::make_shared<asio::steady_timer>(m_io, std::chrono::milliseconds(ms));
  timer->async_wait([this, timer, f = std::move(f)](boost::system::error_code ec) {
    if (!ec && !m_stopped) f();
  });
}

void Host::stop() {
  if (m_stopped) return;
  m_stopped = true;
  m_wake.cancel();
  m_server->stop();
  if (m_metrics) m_metrics->stop();
}

void Host::reload_tls(std::shared_ptr<const tls::Context> tls) {
  m_cfg.tls = tls;
  m_server->set_tls(std::move(tls));
}

}  // namespace tpc::node
