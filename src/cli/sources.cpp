#include "cli/sources.h"

#include <cctype>
#include <cstdlib>

#include "common/status.h"
#include "common/util.h"

namespace tpc::cli {

namespace {
bool truthy(std::string v) {
  for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return v == "1" || v == "true" || v == "yes" || v == "on";
}
}  // namespace

void options_from_env_and_file(const CLI::App& sub, std::vector<std::string>& args) {
  // The options the command line sets, and its --config file.
  std::vector<std::string> set;
  std::string file;
  for (size_t i = 2; i < args.size() && args[i] != "--"; ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) continue;
    std::string name = a.substr(2, a.find('=') == std::string::npos ? std::string::npos
                                                                       : a.find('=') - 2);
    set.push_back(name);
    if (name == "config")
      file = a.find('=') != std::string::npos ? a.substr(a.find('=') + 1)
                                              : (i + 1 < args.size() ? args[i + 1] : "");
  }
  auto is_set = [&](const std::string& n) {
    return std::find(set.begin(), set.end(), n) != set.end();
  };
  std::vector<std::string> added;
  auto add = [&](const CLI::Option* opt, const std::string& n, const std::string& value) {
    if (opt->get_expected_min() == 0) {  // a flag: set by a true value
      if (truthy(value)) added.push_back("--" + n);
    } else {
      added.push_back("--" + n + "=" + value);
    }
    set.push_back(n);
  };
  std::vector<std::string> names;
  for (const auto* opt : sub.get_options())
    for (const auto& n : opt->get_lnames()) names.push_back(n);
  // The environment. An option of several names (--max-message, --max-line) is taken once:
  // from the first of its names that is set.
  auto given = [&](const CLI::Option* opt) {
    for (const auto& n : opt->get_lnames())
      if (is_set(n)) return true;
    return false;
  };
  for (const auto* opt : sub.get_options())
    for (const auto& n : opt->get_lnames()) {
      if (n == "help" || n == "config" || given(opt)) continue;
      std::string var = "TPC_" + n;
      for (auto& c : var)
        c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (const char* v = std::getenv(var.c_str()); v && *v) add(opt, n, v);
    }
  // The file.
  if (!file.empty()) {
    std::vector<CLI::ConfigItem> items;
    try {
      items = CLI::ConfigTOML().from_file(file);
    } catch (const CLI::Error& e) {
      throw Error("--config " + file + ": " + e.what(), 2);
    }
    for (const auto& it : items) {
      // Top-level keys, or keys under [COMMAND]; CLI11 reports section headers as "++"/"--".
      if (it.name == "++" || it.name == "--") continue;
      if (!it.parents.empty() && !(it.parents.size() == 1 && it.parents[0] == sub.get_name()))
        continue;
      const CLI::Option* opt = nullptr;
      for (const auto* o : sub.get_options())
        for (const auto& n : o->get_lnames())
          if (n == it.name) opt = o;
      if (!opt || it.name == "help" || it.name == "config") {
        std::string near = did_you_mean(it.name, names);
        throw Error("--config " + file + ": '" + it.name + "' is not an option of tpc " +
                        sub.get_name() + (near.empty() ? "" : "; did you mean '" + near + "'?"),
                    2);
      }
      if (given(opt)) continue;
      std::string value;
      for (size_t i = 0; i < it.inputs.size(); ++i) value += (i ? "," : "") + it.inputs[i];
      add(opt, it.name, value);
    }
  }
  args.insert(args.begin() + 2, added.begin(), added.end());
}

}  // namespace tpc::cli
