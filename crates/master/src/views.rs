//! Read-only views of [`MasterState`] for the HTTP admin API and `/metrics`.

use super::state::MasterState;
use serde::Serialize;

/// One mounted segment.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentView {
    pub name: String,
    /// [`MasterState::client_label`] of the owner (never its id: that is its secret).
    pub owner: String,
    pub base_addr: u64,
    pub size: u64,
    pub used: u64,
    pub free_extents: usize,
    pub largest_free: u64,
    pub protocol: String,
    pub location: String,
}

/// One known client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    /// [`MasterState::client_label`] of the client (never its id).
    pub id: String,
    pub last_seen_ms_ago: u64,
    pub segments: Vec<String>,
}

/// One visible object.
#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub key: String,
    pub size: u64,
    pub replicas: usize,
    pub pieces: usize,
    pub leased: bool,
    pub soft_pinned: bool,
    pub hard_pinned: bool,
    pub last_access_ms_ago: u64,
}

/// Totals for `/metrics` and `/health`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub objects: usize,
    pub pending_puts: usize,
    pub bytes_used: u64,
    pub bytes_total: u64,
    pub segments: usize,
    pub clients: usize,
    pub active_leases: usize,
    pub soft_pinned: usize,
    pub hard_pinned: usize,
}

impl MasterState {
    /// Mounted segments, by name.
    pub fn segment_views(&self) -> Vec<SegmentView> {
        let mut v: Vec<SegmentView> = self
            .segments
            .iter()
            .map(|(_, s)| SegmentView {
                name: s.name.clone(),
                owner: self.client_label(s.owner),
                base_addr: s.base_addr,
                size: s.alloc.capacity(),
                used: s.alloc.used(),
                free_extents: s.alloc.free_extents(),
                largest_free: s.alloc.largest_free(),
                protocol: s.protocol.clone(),
                location: s.location.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Known clients.
    pub fn client_views(&self) -> Vec<ClientView> {
        let now = self.now_ms();
        let mut v: Vec<ClientView> = self
            .clients
            .iter()
            .map(|(id, c)| ClientView {
                id: self.client_label(*id),
                last_seen_ms_ago: now.saturating_sub(c.last_seen),
                segments: c
                    .segments
                    .iter()
                    .filter_map(|&s| self.segments.get(s).map(|s| s.name.clone()))
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Visible keys starting with `prefix`, sorted, at most `limit`.
    pub fn key_views(&self, prefix: &str, limit: usize) -> Vec<KeyView> {
        let now = self.now_ms();
        let mut keys: Vec<&str> = self
            .objects
            .keys()
            .map(|k| &**k)
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        keys.into_iter()
            .map(|k| {
                let o = &self.objects[k];
                let mut reps: Vec<u8> = o.pieces.iter().map(|p| p.replica).collect();
                reps.dedup();
                KeyView {
                    key: k.to_string(),
                    size: o.size,
                    replicas: reps.len(),
                    pieces: o.pieces.len(),
                    leased: o.lease_until > now,
                    soft_pinned: o.soft_pinned(now),
                    hard_pinned: o.hard_pinned(),
                    last_access_ms_ago: now.saturating_sub(o.last_access),
                }
            })
            .collect()
    }

    /// Totals (O(objects) for the lease and pin counts).
    pub fn summary(&self) -> Summary {
        let now = self.now_ms();
        Summary {
            objects: self.objects.len(),
            pending_puts: self.pending.len(),
            bytes_used: self.segments.used(),
            bytes_total: self.segments.total(),
            segments: self.segments.len(),
            clients: self.clients.len(),
            active_leases: self
                .objects
                .values()
                .filter(|o| o.lease_until > now)
                .count(),
            soft_pinned: self.objects.values().filter(|o| o.soft_pinned(now)).count(),
            hard_pinned: self.objects.values().filter(|o| o.hard_pinned()).count(),
        }
    }
}
