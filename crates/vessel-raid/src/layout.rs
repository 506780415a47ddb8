//! Where array bytes live on the members.
//!
//! Every member has a 1 MiB header (superblock and write-intent bitmap), then the data
//! area, then one CRC32 per 4 KiB block of the data area.
//!
//! Every member's data area is cut into rows of one chunk each; row `r` of every member
//! starts at member offset `DATA_OFFSET + r * chunk_size`. A row holds `data_members`
//! chunks of array data, in array order, plus the parity chunks:
//! - RAID 0: data chunk `d` of row `r` is on member `d`.
//! - RAID 1: every member holds the same chunk.
//! - RAID 5, left-symmetric (md's default): P is on member `n-1 - r % n`, data chunk `d`
//!   on member `(P + 1 + d) % n`, so consecutive chunks visit every member in turn.
//! - RAID 6, left-symmetric (md's default): P on `n-1 - r % n`, Q on `(P + 1) % n`, data
//!   chunk `d` on `(P + 2 + d) % n`; data chunk `d` carries Q coefficient `g^d`.

use crate::RaidLevel;

/// Bytes reserved at the start of every member for the superblock and write-intent bitmap.
pub const DATA_OFFSET: u64 = 1 << 20;

/// Bytes of member data covered by one checksum.
pub const CSUM_BLOCK: u64 = 4096;

/// Checksum area needed for `data_size` bytes of member data.
pub fn csum_size(data_size: u64) -> u64 {
    (data_size / CSUM_BLOCK * 4).div_ceil(CSUM_BLOCK) * CSUM_BLOCK
}

/// The shape of an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// RAID level.
    pub level: RaidLevel,
    /// Number of member slots.
    pub members: usize,
    /// Chunk size in bytes.
    pub chunk: u64,
    /// Data area of each member, a whole number of chunks.
    pub data_size: u64,
}

impl Geometry {
    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.data_size / self.chunk
    }

    /// Chunks of array data per row.
    pub fn data_members(&self) -> usize {
        self.level.data_members(self.members)
    }

    /// Array bytes per row.
    pub fn row_bytes(&self) -> u64 {
        self.chunk * self.data_members() as u64
    }

    /// The size the array presents.
    pub fn size(&self) -> u64 {
        self.rows() * self.row_bytes()
    }

    /// Member offset of the per-block checksum area, right after the data area.
    pub fn csum_offset(&self) -> u64 {
        DATA_OFFSET + self.data_size
    }

    /// Bytes of the checksum area: one CRC32 per [`CSUM_BLOCK`] of data, in whole blocks.
    pub fn csum_size(&self) -> u64 {
        csum_size(self.data_size)
    }

    /// Smallest member that can hold this geometry.
    pub fn member_bytes(&self) -> u64 {
        self.csum_offset() + self.csum_size()
    }

    /// Member offset of the start of row `row`.
    pub fn member_offset(&self, row: u64) -> u64 {
        DATA_OFFSET + row * self.chunk
    }

    /// P member of a row (RAID 5 and 6).
    pub fn p_member(&self, row: u64) -> Option<usize> {
        match self.level {
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                Some(self.members - 1 - (row % self.members as u64) as usize)
            }
            _ => None,
        }
    }

    /// Q member of a row (RAID 6).
    pub fn q_member(&self, row: u64) -> Option<usize> {
        match (self.level, self.p_member(row)) {
            (RaidLevel::Raid6, Some(p)) => Some((p + 1) % self.members),
            _ => None,
        }
    }

    /// Member holding data chunk `d` of `row` (for RAID 1, the first mirror).
    pub fn data_member(&self, row: u64, d: usize) -> usize {
        match self.level {
            RaidLevel::Raid0 => d,
            RaidLevel::Raid1 => 0,
            RaidLevel::Raid5 => (self.p_member(row).unwrap_or(0) + 1 + d) % self.members,
            RaidLevel::Raid6 => (self.p_member(row).unwrap_or(0) + 2 + d) % self.members,
        }
    }

    /// What member `m` holds in `row`.
    pub fn role(&self, row: u64, m: usize) -> Role {
        match self.level {
            RaidLevel::Raid0 => Role::Data(m),
            RaidLevel::Raid1 => Role::Data(0),
            RaidLevel::Raid5 | RaidLevel::Raid6 => {
                if Some(m) == self.p_member(row) {
                    return Role::P;
                }
                if Some(m) == self.q_member(row) {
                    return Role::Q;
                }
                let skip = if self.level == RaidLevel::Raid5 { 1 } else { 2 };
                let p = self.p_member(row).unwrap_or(0);
                Role::Data((m + 2 * self.members - p - skip) % self.members)
            }
        }
    }
}

/// What one member holds in one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Data chunk with this index in the row.
    Data(usize),
    /// The xor parity.
    P,
    /// The GF(2^8) parity.
    Q,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(level: RaidLevel, members: usize) -> Geometry {
        Geometry {
            level,
            members,
            chunk: 4096,
            data_size: 4096 * 16,
        }
    }

    #[test]
    fn raid5_is_left_symmetric() {
        // md's table for 4 disks, left-symmetric: row 0 = D0 D1 D2 P, row 1 = D1 D2 P D0...
        let g = geo(RaidLevel::Raid5, 4);
        assert_eq!(g.p_member(0), Some(3));
        assert_eq!(
            (0..3).map(|d| g.data_member(0, d)).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(g.p_member(1), Some(2));
        assert_eq!(
            (0..3).map(|d| g.data_member(1, d)).collect::<Vec<_>>(),
            [3, 0, 1]
        );
    }

    #[test]
    fn roles_invert_the_mapping() {
        for (level, n) in [
            (RaidLevel::Raid5, 3),
            (RaidLevel::Raid5, 5),
            (RaidLevel::Raid6, 4),
            (RaidLevel::Raid6, 7),
        ] {
            let g = geo(level, n);
            for row in 0..20 {
                for d in 0..g.data_members() {
                    assert_eq!(g.role(row, g.data_member(row, d)), Role::Data(d));
                }
                let p = g.p_member(row).unwrap_or(usize::MAX);
                assert_eq!(g.role(row, p), Role::P);
                if let Some(q) = g.q_member(row) {
                    assert_eq!(g.role(row, q), Role::Q);
                    assert_ne!(p, q);
                }
            }
        }
    }
}
