#include <doctest/doctest.h>

#include <random>

#include "client/client.h"
#include "client/shell.h"

using namespace tpc;

TEST_SUITE("shell") {
  TEST_CASE("a value as the shell shows it is read back by the shell as the same bytes") {
    std::mt19937 rng(7);
    std::vector<std::string> values = {"",      "plain", "two words", "a\"b",   "back\\slash",
                                       "it's",  "tab\t", "nl\n",      "\x01\x7f", "caf\xc3\xa9",
                                       "\xff\xfe", std::string("nul\0in", 6)};
    for (int i = 0; i < 2000; ++i) {
      std::string v(rng() % 12, '\0');
      for (auto& c : v) c = static_cast<char>(rng() & 0xff);
      values.push_back(v);
    }
    for (const auto& v : values) {
      std::string shown = client::printable(v);
      auto back = client::shell_split("put k " + shown);
      REQUIRE(back);
      REQUIRE(back->size() == 3);
      CHECK((*back)[2] == v);
      // One unambiguous form: plain words are shown as they are, nothing else is.
      bool quoted = !shown.empty() && shown[0] == '"';
      CHECK(quoted == (shown != v));
    }
    CHECK(client::printable("a\x01" "b c") == "\"a\\x01b c\"");
    CHECK(client::printable("hello") == "hello");
  }
}
