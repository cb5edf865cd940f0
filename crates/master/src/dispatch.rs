//! [`MasterState::handle`]: one [`Request`] in, one answer out — the only entry point the
//! server uses, so every RPC goes through the same validation.

use super::state::MasterState;
use mooncake_store_protocol::{ErrorCode, Request, Response, RoleInfo, SyncReply, MAX_BATCH};

/// Most segments one client may list in a [`Request::SyncClient`].
const MAX_SYNC_SEGMENTS: usize = 1024;

/// Requests that change the whole cluster rather than named keys or the caller's
/// own segments.
pub fn needs_admin(req: &Request) -> bool {
    matches!(
        req,
        Request::RemoveAll { .. } | Request::RemoveByRegex { .. }
    )
}

impl MasterState {
    /// Apply one request with every permission (in-process callers, tests).
    pub fn handle(&mut self, req: Request) -> Result<Response, ErrorCode> {
        self.handle_as(req, true)
    }

    /// Apply one request from a caller that proved the admin credential (`admin`)
    /// or only the cluster one. Cluster-wide deletions need the admin credential
    /// ([`ErrorCode::PermissionDenied`], counted, nothing changed).
    pub fn handle_as(&mut self, req: Request, admin: bool) -> Result<Response, ErrorCode> {
        if !admin && needs_admin(&req) {
            self.stats.admin_refused += 1;
            tracing::warn!(request = req.name(), "refused: needs the admin credential");
            return Err(ErrorCode::PermissionDenied);
        }
        let batch_len = match &req {
            Request::BatchPutStart { items, .. } => items.len(),
            Request::BatchPutEndChecked { items } => items.len(),
            Request::BatchPutEnd { keys }
            | Request::BatchPutRevoke { keys }
            | Request::BatchGetReplicaList { keys }
            | Request::BatchExists { keys }
            | Request::BatchRemove { keys, .. } => keys.len(),
            _ => 0,
        };
        if batch_len > MAX_BATCH {
            return Err(ErrorCode::InvalidParams);
        }
        Ok(match req {
            Request::Ping => Response::Pong,
            Request::Heartbeat { client_id } => Response::Heartbeat(self.heartbeat(client_id)),
            Request::MountSegment { client_id, segment } => {
                self.mount_segment(client_id, &segment)?;
                Response::Done
            }
            Request::UnmountSegment { client_id, name } => {
                self.unmount_segment(client_id, &name)?;
                Response::Done
            }
            Request::PutStart { key, size, config } => {
                Response::Replicas(self.put_start(&key, size, &config, false)?)
            }
            Request::UpsertStart { key, size, config } => {
                Response::Replicas(self.put_start(&key, size, &config, true)?)
            }
            Request::PutEnd { key } => {
                self.put_end(&key)?;
                Response::Done
            }
            Request::PutEndChecked { key, crc32c } => {
                self.put_end_checked(&key, Some(crc32c))?;
                Response::Done
            }
            Request::BatchPutEndChecked { items } => Response::BatchDone(
                items
                    .iter()
                    .map(|(k, c)| self.put_end_checked(k, *c))
                    .collect(),
            ),
            Request::PutRevoke { key } => {
                self.put_revoke(&key)?;
                Response::Done
            }
            Request::GetReplicaList { key } => Response::Replicas(self.get_replica_list(&key)?),
            Request::Exists { key } => Response::Exists(self.exists(&key)?),
            Request::GetSize { key } => Response::Size(self.get_size(&key)?),
            Request::Remove { key, force } => {
                self.remove(&key, force)?;
                Response::Done
            }
            Request::RemoveByRegex { pattern, force } => {
                Response::Count(self.remove_by_regex(&pattern, force)?)
            }
            Request::RemoveAll { force } => Response::Count(self.remove_all(force)),
            Request::BatchPutStart { items, config } => Response::BatchReplicas(
                items
                    .iter()
                    .map(|(k, s)| self.put_start(k, *s, &config, false))
                    .collect(),
            ),
            Request::BatchPutEnd { keys } => {
                Response::BatchDone(keys.iter().map(|k| self.put_end(k)).collect())
            }
            Request::BatchPutRevoke { keys } => {
                Response::BatchDone(keys.iter().map(|k| self.put_revoke(k)).collect())
            }
            Request::BatchGetReplicaList { keys } => {
                Response::BatchReplicas(keys.iter().map(|k| self.get_replica_list(k)).collect())
            }
            Request::BatchExists { keys } => {
                Response::BatchExists(keys.iter().map(|k| self.exists(k)).collect())
            }
            Request::BatchRemove { keys, force } => {
                Response::BatchDone(keys.iter().map(|k| self.remove(k, force)).collect())
            }
            Request::SyncClient {
                client_id,
                segments,
            } => {
                if segments.len() > MAX_SYNC_SEGMENTS {
                    return Err(ErrorCode::InvalidParams);
                }
                let (mounted, unmounted) = self.sync_client(client_id, &segments);
                Response::Sync(SyncReply {
                    client_ttl_ms: self.cfg.client_ttl * 1000,
                    term: self.term,
                    incarnation: self.incarnation,
                    mounted,
                    unmounted,
                })
            }
            Request::Hello => Response::Role(RoleInfo {
                term: self.term,
                serving: true,
                incarnation: self.incarnation,
            }),
        })
    }
}
