// One line per event on stderr, or in --log-file: time, level, role and id, message; as text,
// or as one JSON object per line (--log-format json).
// Thread-safe; a line is written with one write(2) so lines never interleave.
#pragma once
#include <fmt/format.h>

#include <string>

namespace tpc::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, fatal = 4, off = 5 };

// Sets the process-wide role tag ("leader-1", "participant-2", "client").
void set_role(std::string role);
void set_level(Level level);
Level level();
// Parses "debug|info|warn|error|off", in any case; returns false on anything else.
bool parse_level(const std::string& text, Level* out);
enum class Format { text, json };
void set_format(Format f);
// Parses "text|json", in any case.
bool parse_format(const std::string& text, Format* out);
// Lines go to `path` (appended, created 0600) instead of stderr; "" : stderr. Error (with
// the reason) when it cannot be opened; the previous destination stays.
bool set_file(const std::string& path, std::string* error);
// Opens the file again (after a rotation moved it away: SIGHUP); false, and the old one kept,
// when it cannot be.
bool reopen(std::string* error);
void write(Level level, const std::string& message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::debug) write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::info) write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::warn) write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::error) write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace tpc::log
