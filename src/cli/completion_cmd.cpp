// tpc completion bash|zsh: shell completion of commands and options, made from the command
// line's own definition (so it never lags behind it).
#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include "cli/commands.h"
#include "client/shell.h"
#include "common/status.h"

namespace tpc::cli {

namespace {
std::string words_of(const CLI::App* app, const std::vector<std::string>& more = {}) {
  std::string w;
  for (const auto* opt : app->get_options())
    for (const auto& n : opt->get_lnames()) w += (w.empty() ? "" : " ") + ("--" + n);
  for (const auto* s : app->get_subcommands({})) w += " " + s->get_name();
  for (const auto& m : more) w += " " + m;
  return w;
}

std::string bash_script(const CLI::App& app) {
  std::string cases;
  for (const auto* s : app.get_subcommands({})) {
    std::vector<std::string> more;
    if (s->get_name() == "client") {
      more = client::command_names();
      for (const auto& f : client::command_flags())
        if (std::find(more.begin(), more.end(), f) == more.end()) more.push_back(f);
    }
    cases += fmt::format("    {}) opts=\"{}\" ;;\n", s->get_name(), words_of(s, more));
    for (const auto* sub2 : s->get_subcommands({}))
      cases += fmt::format("    {}/{}) opts=\"{}\" ;;\n", s->get_name(), sub2->get_name(),
                           words_of(sub2));
  }
  std::string top;
  for (const auto* s : app.get_subcommands({})) top += s->get_name() + " ";
  return fmt::format(R"(# bash completion for tpc: source it, or put it in
# /usr/share/bash-completion/completions/tpc (tpc completion bash > that file).
_tpc() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" opts key
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "{}--help --version" -- "$cur"))
    return
  fi
  key="${{COMP_WORDS[1]}}"
  if [ "$COMP_CWORD" -ge 3 ] && [ "$key" = cert ]; then key="cert/${{COMP_WORDS[2]}}"; fi
  case "$key" in
{}    *) opts="" ;;
  esac
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -o default -F _tpc tpc
)",
                     top, cases);
}
}  // namespace

std::function<int()> setup_completion(CLI::App& app) {
  auto* sub = app.add_subcommand("completion", "print a shell completion script: bash or zsh");
  auto shell = std::make_shared<std::string>();
  sub->add_option("SHELL", *shell, "bash or zsh")->required()->check(CLI::IsMember({"bash", "zsh"}));
  return [sub, shell, &app]() -> int {
    if (!sub->parsed()) return -1;
    if (*shell == "bash") {
      std::cout << bash_script(app);
    } else {
      // zsh runs the bash function through its bash compatibility layer.
      std::cout << "# zsh completion for tpc: source it from ~/.zshrc (tpc completion zsh > "
                   "~/.tpc-completion.zsh)\n"
                   "autoload -U +X compinit && compinit\n"
                   "autoload -U +X bashcompinit && bashcompinit\n"
                << bash_script(app);
    }
    return 0;
  };
}

}  // namespace tpc::cli
