// etcd's JSON gateway encoding (src/etcd/messages.*): base64, prefix ranges, transactions.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "etcd/messages.h"

using namespace tpc;
using namespace tpc::etcd;
using nlohmann::json;

TEST_SUITE("etcd") {
  TEST_CASE("base64 round-trips every length and byte, and refuses what is not base64") {
    std::string all;
    for (int i = 0; i < 256; ++i) all += static_cast<char>(i);
    for (size_t n = 0; n <= all.size(); n += 1) {
      std::string in = all.substr(0, n);
      auto back = unbase64(base64(in));
      REQUIRE(back.is_ok());
      CHECK(*back == in);
    }
    CHECK(base64("tpc") == "dHBj");
    CHECK(base64("tp") == "dHA=");
    CHECK(*unbase64("dHA=") == "tp");
    CHECK_FALSE(unbase64("dHA").is_ok());
    CHECK_FALSE(unbase64("d=A=").is_ok());
    CHECK_FALSE(unbase64("dH!=").is_ok());
  }

  TEST_CASE("a prefix's range end is the first key after every key with that prefix") {
    CHECK(prefix_end("tpc/") == "tpc0");
    CHECK(prefix_end(std::string("a\xff", 2)) == "b");
    CHECK(prefix_end(std::string("\xff", 1)) == std::string(1, '\0'));
  }

  TEST_CASE("a create-if-absent transaction is encoded as the gateway expects") {
    Txn t;
    t.compare.push_back(Compare::absent("d/1"));
    t.compare.push_back(Compare::leased("leader/1", 42));
    t.success.push_back(Op::put("d/1", "commit", 42));
    t.failure.push_back(Op::get("d/1"));
    json j = json::parse(encode_txn(t));
    CHECK(j["compare"][0]["key"] == base64("d/1"));
    CHECK(j["compare"][0]["target"] == "CREATE");
    CHECK(j["compare"][0]["result"] == "EQUAL");
    CHECK(j["compare"][0]["create_revision"] == "0");
    CHECK(j["compare"][1]["target"] == "LEASE");
    CHECK(j["compare"][1]["lease"] == "42");
    CHECK(j["success"][0]["request_put"]["value"] == base64("commit"));
    CHECK(j["success"][0]["request_put"]["lease"] == "42");
    CHECK(j["failure"][0]["request_range"]["key"] == base64("d/1"));
  }

  TEST_CASE("transaction, range and lease replies decode, and errors and junk are refused") {
    std::string reply = R"({"header":{"revision":"17"},"responses":[{"response_range":{"kvs":[)"
                        R"({"key":"ZC8x","value":"YWJvcnQ=","create_revision":"9","mod_revision":"9",)"
                        R"("version":"1"}],"count":"1"}}]})";
    auto r = decode_txn(reply);
    REQUIRE(r.is_ok());
    CHECK_FALSE(r->succeeded);
    CHECK(r->revision == 17);
    REQUIRE(r->results.size() == 1);
    REQUIRE(r->results[0].size() == 1);
    CHECK(r->results[0][0].key == "d/1");
    CHECK(r->results[0][0].value == "abort");
    CHECK(r->results[0][0].create_revision == 9);
    auto ok = decode_txn(R"({"header":{"revision":"18"},"succeeded":true,"responses":[{"response_put":{}}]})");
    REQUIRE(ok.is_ok());
    CHECK(ok->succeeded);
    auto lease = decode_lease_grant(R"({"header":{},"ID":"7587","TTL":"5"})");
    REQUIRE(lease.is_ok());
    CHECK(lease->first == 7587);
    CHECK(lease->second == 5);
    CHECK(*decode_lease_keepalive(R"({"result":{"ID":"7587","TTL":"5"}})") == 5);
    CHECK(*decode_lease_keepalive(R"({"result":{"ID":"7587"}})") == 0);  // gone
    auto err = decode_txn(R"({"error":"etcdserver: too many operations in txn request","code":3,"message":"etcdserver: too many operations in txn request"})");
    REQUIRE_FALSE(err.is_ok());
    CHECK(err.status().code() == "ETCD");
    CHECK(err.status().message().find("too many operations") != std::string::npos);
    CHECK_FALSE(decode_txn("not json").is_ok());
    CHECK_FALSE(decode_txn(R"({"responses":[{"response_range":{"kvs":[{"key":"!!"}]}}]})").is_ok());
    CHECK_FALSE(decode_range(R"({"kvs":[{"key":"ZA==","version":"x"}]})").is_ok());
  }
}
