// moeroute: MoE routing primitives applied to real files. Subcommands register themselves.

#include <algorithm>
#include <iostream>
#include <string>

#include "cli.hpp"
#include "moeroute/version.hpp"

namespace {
std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moeroute: Mixture-of-Experts routing, residency, caching and concentration tools"};
  app.require_subcommand(1);
  app.set_version_flag("--version", MOEROUTE_VERSION_STRING);
  int exit_code = 0;
  auto& reg = moeroute::cli::registry();
  std::sort(reg.begin(), reg.end());
  for (auto& entry : reg) entry.second(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "moeroute: " << one_line(e.what()) << " (see --help)\n";
    return 2;
  } catch (const moeroute::error& e) {
    std::cerr << "moeroute: " << one_line(e.message()) << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "moeroute: out of memory\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "moeroute: " << one_line(e.what()) << "\n";
    return 2;
  }
  return exit_code;
}
