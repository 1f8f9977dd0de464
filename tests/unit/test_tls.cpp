// Which hosts a certificate names: a leader's must name the host it advertises.
#include <doctest/doctest.h>

#include "tls/certs.h"

using namespace tpc;

TEST_SUITE("tls") {
  TEST_CASE("names_host: DNS names without case, one-label wildcards, addresses in any form") {
    std::vector<std::string> hosts = {"DB1.example", "*.nodes.example", "10.0.0.5", "::1"};
    CHECK(tls::names_host(hosts, "db1.example"));
    CHECK(tls::names_host(hosts, "n7.nodes.example"));
    CHECK_FALSE(tls::names_host(hosts, "a.n7.nodes.example"));
    CHECK_FALSE(tls::names_host(hosts, "nodes.example"));
    CHECK(tls::names_host(hosts, "10.0.0.5"));
    CHECK_FALSE(tls::names_host(hosts, "10.0.0.6"));
    CHECK(tls::names_host(hosts, "0:0::1"));
    CHECK_FALSE(tls::names_host(hosts, "db2.example"));
    CHECK_FALSE(tls::names_host({}, "db1.example"));
    // An address is never matched by a name that looks like it.
    CHECK_FALSE(tls::names_host({"*.0.0.5"}, "10.0.0.5"));
  }
}
