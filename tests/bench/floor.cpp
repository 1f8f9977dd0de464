// The physical floor of one 2PC commit on this machine, measured in the same run as the
// benchmark: p50 of a 256-byte append + fdatasync in DIR, and p50 of a loopback TCP round trip
// between two processes. Prints one JSON line.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

static double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
// The round trip is measured between two different CPUs, as between the leader and a
// participant (on one CPU a ping-pong is a mere context switch, far below a real hop).
static void pin(int cpu) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

static double p50(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/tmp";
  std::string path = dir + "/floor-bench.tmp";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  if (fd < 0) return perror("open"), 1;
  char rec[256] = {};
  std::vector<double> fs;
  for (int i = 0; i < 2000; ++i) {
    double t = now_us();
    if (::write(fd, rec, sizeof rec) != sizeof rec || ::fdatasync(fd) != 0)
      return perror("write"), 1;
    fs.push_back(now_us() - t);
  }
  ::close(fd);
  ::unlink(path.c_str());

  int ls = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  ::listen(ls, 1);
  pid_t child = ::fork();
  if (child == 0) {
    pin(1);
    int c = ::accept(ls, nullptr, nullptr);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char b[64];
    while (::read(c, b, sizeof b) == sizeof b && ::write(c, b, sizeof b) == sizeof b) {
    }
    _exit(0);
  }
  pin(0);
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return perror("connect"), 1;
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char b[64] = {};
  std::vector<double> rt;
  for (int i = 0; i < 5000; ++i) {
    double t = now_us();
    if (::write(s, b, sizeof b) != sizeof b) break;
    size_t got = 0;
    while (got < sizeof b) {
      ssize_t r = ::read(s, b + got, sizeof b - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    rt.push_back(now_us() - t);
  }
  ::close(s);
  ::waitpid(child, nullptr, 0);
  double f = p50(fs), r = p50(rt);
  // One commit: leader->participant PREPARE and YES (one round trip), the participant's
  // prepare force, the leader's decision force, and the client's own round trip to the leader.
  double floor_us = 2 * r + 2 * f;
  std::printf("{\"fdatasync_p50_us\":%.1f,\"rtt_p50_us\":%.1f,\"floor_us\":%.1f}\n", f, r,
              floor_us);
  return 0;
}
