// The specs beside the code stay complete: every log record type, every event and action of
// both cores, and every failpoint has its line in the docs. Adding one without its line fails
// here.
#include <cxxabi.h>
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <typeinfo>
#include <variant>

#include <fmt/format.h>

#include "leader/core.h"
#include "participant/core.h"

using namespace tpc;

namespace {
std::string read(const std::string& rel) {
  std::ifstream f(std::string(TPC_SOURCE_DIR) + "/" + rel);
  REQUIRE(f);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// "tpc::leader::ev::Txn" -> "Txn".
template <class T>
std::string short_name() {
  int status = 0;
  char* d = abi::__cxa_demangle(typeid(T).name(), nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : typeid(T).name();
  std::free(d);
  return s.substr(s.rfind(':') + 1);
}
template <class V, size_t... I>
std::vector<std::string> names(std::index_sequence<I...>) {
  return {short_name<std::variant_alternative_t<I, V>>()...};
}
template <class V>
std::vector<std::string> names() {
  return names<V>(std::make_index_sequence<std::variant_size_v<V>>());
}

// The text of a markdown section, from its heading to the next heading of any level.
std::string section(const std::string& doc, const std::string& heading) {
  auto at = doc.find("\n" + heading + "\n");
  REQUIRE(at != std::string::npos);
  auto end = doc.find("\n#", at + heading.size() + 2);
  return doc.substr(at, end == std::string::npos ? std::string::npos : end - at);
}
}  // namespace

TEST_SUITE("docs") {
  TEST_CASE("docs/log-format.md has a row for every record type of both logs") {
    std::string doc = read("docs/log-format.md");
    std::string leader = section(doc, "## Leader records");
    std::string part = section(doc, "## Participant records");
    for (auto& [type, name] : leader::k_records) {
      INFO(std::string(name));
      CHECK(leader.find(fmt::format("| {} | {} |", type, name)) != std::string::npos);
    }
    for (auto& [type, name] : participant::k_records) {
      INFO(std::string(name));
      CHECK(part.find(fmt::format("| {} | {} |", type, name)) != std::string::npos);
    }
  }

  TEST_CASE("docs/design.md names every event and action of both cores") {
    std::string table = section(read("docs/design.md"), "## Events and actions");
    std::vector<std::string> all;
    for (auto v : {names<leader::Event>(), names<leader::Action>(), names<participant::Event>(),
                   names<participant::Action>()})
      all.insert(all.end(), v.begin(), v.end());
    CHECK(all.size() > 40);
    for (auto& n : all) {
      INFO(n);
      CHECK(table.find("`" + n + "`") != std::string::npos);
    }
  }

  TEST_CASE("docs/recovery.md lists every failpoint in the sources") {
    std::string doc = section(read("docs/recovery.md"), "## Failpoints");
    std::regex hit("failpoint::hit\\(\"([a-zA-Z]+/[a-zA-Z]+)\"");
    std::set<std::string> found;
    for (auto& e :
         std::filesystem::recursive_directory_iterator(std::string(TPC_SOURCE_DIR) + "/src")) {
      if (e.path().extension() != ".cpp") continue;
      std::ifstream f(e.path());
      std::stringstream ss;
      ss << f.rdbuf();
      std::string text = ss.str();
      for (std::sregex_iterator it(text.begin(), text.end(), hit), end; it != end; ++it)
        found.insert((*it)[1]);
    }
    CHECK(found.size() >= 14);
    for (auto& name : found) {
      INFO(name);
      CHECK(doc.find("`" + name + "`") != std::string::npos);
    }
  }
}

TEST_SUITE("docs") {
  // The module map: README's layout table lists src/'s folders so that each uses only those
  // above it. A new include pointing down the table (a back-edge) fails here.
  TEST_CASE("every folder of src/ includes only folders above it in README's layout") {
    std::string readme = read("README.md");
    std::regex row("\\| `src/([a-z]+)/` \\|");
    std::vector<std::string> order;
    for (auto it = std::sregex_iterator(readme.begin(), readme.end(), row);
         it != std::sregex_iterator(); ++it)
      order.push_back((*it)[1]);
    REQUIRE(order.size() >= 10);
    auto rank = [&](const std::string& d) {
      auto it = std::find(order.begin(), order.end(), d);
      return it == order.end() ? -1 : static_cast<int>(it - order.begin());
    };
    std::regex inc("#include \"([a-z]+)/");
    namespace fs = std::filesystem;
    int files = 0;
    for (auto& e : fs::directory_iterator(std::string(TPC_SOURCE_DIR) + "/src")) {
      if (!e.is_directory()) continue;
      std::string dir = e.path().filename().string();
      CAPTURE(dir);
      CHECK(rank(dir) >= 0);  // every folder has its row
      for (auto& f : fs::directory_iterator(e.path())) {
        ++files;
        std::string text = read("src/" + dir + "/" + f.path().filename().string());
        for (auto it = std::sregex_iterator(text.begin(), text.end(), inc);
             it != std::sregex_iterator(); ++it) {
          std::string used = (*it)[1];
          if (used == dir) continue;
          CAPTURE(f.path().filename().string());
          CAPTURE(used);
          CHECK(rank(used) >= 0);
          CHECK(rank(used) < rank(dir));
        }
      }
    }
    CHECK(files > 50);
  }
}
