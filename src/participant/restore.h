// Rebuilding a participant (spec: docs/operations.md, "Replacing a participant").
//
// restore_from_replica fills an empty data directory for participant `--id N` from live
// replicas: it learns the membership from the source, copies the prepared state of every
// transaction touching N's keys and then N's keys themselves (SNAPSHOT), and writes an
// identity that names the node it replaces, so that the leader admits it in N's place. Keys
// a participant owns cannot change while it is out of the cluster (every owner of a key must
// vote YES), so the copy misses no write; a transaction prepared at the source commits or
// aborts at the replacement as at the source (the leader re-sends COMMIT, or the replacement
// asks for the outcome).
//
// restore_from_backup fills an empty data directory from a backup (tpc client backup): the
// store as it was at the backup point, a new identity with no cluster yet (a backup restores
// into a new cluster; any leader without a pin for that place admits it).
#pragma once
#include <string>

#include "participant/server.h"

namespace tpc::participant {

// Throws tpc::Error (exit 2 for what the operator must change) and prints progress to `out`.
void restore_from_replica(const Config& cfg, const std::string& source, std::ostream& out);
void restore_from_backup(const Config& cfg, const std::string& backup_dir, std::ostream& out);

// Throws unless `dir` is missing or empty (a LOCK file aside).
void require_empty_dir(const std::string& dir, const char* option);

}  // namespace tpc::participant
