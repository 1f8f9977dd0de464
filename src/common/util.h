// Small helpers shared by every role.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include "common/status.h"

namespace tpc {
// Milliseconds of a monotonic clock.
int64_t now_ms();
// Milliseconds since the Unix epoch (wall clock): for ages that must survive a restart.
int64_t wall_ms();
// Microseconds of a monotonic clock.
int64_t now_us();
// The non-empty items of a `sep`-separated list: "a,,b" -> {a, b}.
std::vector<std::string> split_list(const std::string& text, char sep);
// The candidate closest to `word` by edit distance, if close enough to be a typo (at most 2
// edits, and fewer than half its length), or one that `word` is a prefix of; "" otherwise.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);
// The decimal integer that is all of `text`; nullopt for anything else (never throws: for
// numbers that come from peers).
std::optional<int64_t> parse_int(std::string_view text);
// Splits "HOST:PORT"; returns false when malformed.
bool parse_host_port(const std::string& text, std::string* host, uint16_t* port);
// HOST:PORT, with an IPv6 address in brackets ([::1]:5000), as parse_host_port reads it back.
std::string host_port(const std::string& host, uint16_t port);
// A --bind value as an address to listen on: an address as is; a name (localhost) resolved,
// IPv4 first. Error USAGE when it does not resolve.
Result<std::string> bind_address(const std::string& bind);
// `n` bytes from the kernel's CSPRNG (getrandom), as 2n lower-case hex digits. Request ids,
// node ids and cluster ids come from here, never from a seeded generator.
std::string random_hex(size_t n);
// A random (version 4) UUID, "8-4-4-4-12" lower-case hex.
std::string new_uuid();
// Takes an exclusive flock on DIR/LOCK for the life of the process; throws tpc::Error when
// another process holds it.
void lock_data_dir(const std::string& dir);
}  // namespace tpc
