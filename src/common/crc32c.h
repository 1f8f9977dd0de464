// CRC-32C (Castagnoli), the checksum of log records.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tpc {
// Extends `crc` (0 to start) over `data`.
uint32_t crc32c(uint32_t crc, const void* data, size_t n);
inline uint32_t crc32c(std::string_view s) { return crc32c(0, s.data(), s.size()); }
// The same from a table, a byte at a time, whatever the CPU (crc32c() uses the CPU's crc32
// instruction where there is one): for tests that the two agree.
uint32_t crc32c_portable(uint32_t crc, const void* data, size_t n);
}  // namespace tpc
