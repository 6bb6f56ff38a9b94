// Certificates for tests of mutual TLS between nodes (network.tls_*),
// made with the openssl command (scripts/setup installs it).
#pragma once

#include <cstdlib>
#include <fstream>
#include <string>

namespace edda::test {

/// Writes a CA, a node certificate it signed and a self-signed "rogue" one
/// into `dir` with the openssl command. False if it failed.
inline bool make_certs(const std::string& dir) {
  std::ofstream{dir + "/node.ext"}
    << "basicConstraints=CA:FALSE\n"
       "extendedKeyUsage=serverAuth,clientAuth\n"
       "subjectAltName=IP:127.0.0.1\n";
  std::string q = " >>" + dir + "/openssl.log 2>&1";
  std::string cmds[] = {
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + dir + "/ca.key -out "
      + dir + "/ca.pem -days 2 -subj /CN=edda-test-ca"
      + " -addext basicConstraints=critical,CA:TRUE"
      + " -addext keyUsage=critical,keyCertSign,cRLSign" + q,
    "openssl req -newkey rsa:2048 -nodes -keyout " + dir + "/node.key -out "
      + dir + "/node.csr -subj /CN=edda-node" + q,
    "openssl x509 -req -in " + dir + "/node.csr -CA " + dir + "/ca.pem -CAkey "
      + dir + "/ca.key -CAcreateserial -out " + dir + "/node.pem -days 2"
      + " -sha256 -extfile " + dir + "/node.ext" + q,
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + dir
      + "/rogue.key -out " + dir + "/rogue.pem -days 2 -subj /CN=edda-node" + q,
  };
  for (auto& c : cmds)
    if (std::system(c.c_str()) != 0)
      return false;
  return true;
}

} // namespace edda::test
