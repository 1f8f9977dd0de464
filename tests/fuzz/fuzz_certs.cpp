// libFuzzer target: certificate loading. Any bytes in: as PEM text, or (first byte 1) as the
// DER inside a PEM frame, so the fuzzer reaches OpenSSL's certificate parser and tpc's reading
// of the subject, validity and subjectAltName. It is refused or read; never a crash or a leak.
#include <openssl/evp.h>

#include <cstdint>
#include <string>

#include "tls/certs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string pem;
  if (data[0] == 1) {
    std::string b64(4 * ((size - 1 + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()), data + 1,
                            static_cast<int>(size - 1));
    b64.resize(static_cast<size_t>(n));
    pem = "-----BEGIN CERTIFICATE-----\n";
    for (size_t i = 0; i < b64.size(); i += 64) pem += b64.substr(i, 64) + "\n";
    pem += "-----END CERTIFICATE-----\n";
  } else {
    pem.assign(reinterpret_cast<const char*>(data), size);
  }
  auto info = tpc::tls::parse_cert(pem);
  if (info) {
    // What is read is usable text: roles and names are compared and printed.
    (void)tpc::tls::is_role(info->role);
    (void)tpc::tls::format_time(info->not_after);
  }
  return 0;
}
