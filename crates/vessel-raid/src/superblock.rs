//! The superblock every member carries at offset 0.
//!
//! One 4 KiB block, little-endian, CRC32 over everything before the last four bytes. Each
//! member records the whole array's geometry, its own slot, and the state of every slot,
//! so that the newest generation found at assembly says which members are current.

use uuid::Uuid;

use crate::RaidLevel;

/// Size of the superblock on disk.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// Magic bytes at the start of every member.
pub const MAGIC: [u8; 8] = *b"VSLRAID\0";
/// On-disk format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Most members one array can have.
pub const MAX_MEMBERS: usize = 64;

const OFF_STATES: usize = 128;
const OFF_CHECKPOINTS: usize = OFF_STATES + MAX_MEMBERS;
const OFF_CRC: usize = SUPERBLOCK_SIZE - 4;

/// Health of one member slot, as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// In sync and used for reads and writes.
    Active,
    /// Gone or refused; never read, never written.
    Failed,
    /// A replacement being rebuilt; valid below its checkpoint.
    Rebuilding,
}

impl SlotState {
    fn to_byte(self) -> u8 {
        match self {
            SlotState::Active => 1,
            SlotState::Failed => 2,
            SlotState::Rebuilding => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(SlotState::Active),
            2 => Some(SlotState::Failed),
            3 => Some(SlotState::Rebuilding),
            _ => None,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Active => "active",
            SlotState::Failed => "failed",
            SlotState::Rebuilding => "rebuilding",
        }
    }
}

/// The decoded superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The pool this member belongs to.
    pub pool: Uuid,
    /// This member's slot.
    pub index: u32,
    /// RAID level.
    pub level: RaidLevel,
    /// Number of member slots.
    pub members: u32,
    /// Chunk size in bytes.
    pub chunk_size: u64,
    /// Bytes of data area on each member (after the header).
    pub data_size: u64,
    /// Bumped on every state change; the highest wins at assembly.
    pub generation: u64,
    /// Whether the array was shut down cleanly (no write-intent bits outstanding).
    pub clean: bool,
    /// State of every slot.
    pub states: Vec<SlotState>,
    /// Per slot: member-data bytes already rebuilt (meaningful for `Rebuilding`).
    pub checkpoints: Vec<u64>,
}

/// Why a block is not a usable superblock.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Wrong magic: not ours.
    Magic,
    /// Checksum mismatch.
    Checksum,
    /// Newer format.
    Version(u32),
    /// A field holds an impossible value.
    Field,
}

impl Superblock {
    /// Encodes into one block.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.level.code().to_le_bytes());
        b[16..32].copy_from_slice(self.pool.as_bytes());
        b[32..36].copy_from_slice(&self.index.to_le_bytes());
        b[36..40].copy_from_slice(&self.members.to_le_bytes());
        b[40..48].copy_from_slice(&self.chunk_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.data_size.to_le_bytes());
        b[56..64].copy_from_slice(&self.generation.to_le_bytes());
        b[64] = u8::from(self.clean);
        for (i, s) in self.states.iter().enumerate() {
            b[OFF_STATES + i] = s.to_byte();
        }
        for (i, c) in self.checkpoints.iter().enumerate() {
            let o = OFF_CHECKPOINTS + i * 8;
            b[o..o + 8].copy_from_slice(&c.to_le_bytes());
        }
        let crc = crc32fast::hash(&b[..OFF_CRC]);
        b[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes one block, checking magic, version and checksum.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < SUPERBLOCK_SIZE || b[0..8] != MAGIC {
            return Err(DecodeError::Magic);
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        if crc32fast::hash(&b[..OFF_CRC]) != u32_at(OFF_CRC) {
            return Err(DecodeError::Checksum);
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let level = RaidLevel::from_code(u32_at(12)).ok_or(DecodeError::Field)?;
        let mut pool = [0u8; 16];
        pool.copy_from_slice(&b[16..32]);
        let members = u32_at(36);
        let n = members as usize;
        if n == 0 || n > MAX_MEMBERS || u32_at(32) >= members {
            return Err(DecodeError::Field);
        }
        let states = (0..n)
            .map(|i| SlotState::from_byte(b[OFF_STATES + i]).ok_or(DecodeError::Field))
            .collect::<Result<Vec<_>, _>>()?;
        let checkpoints = (0..n).map(|i| u64_at(OFF_CHECKPOINTS + i * 8)).collect();
        Ok(Superblock {
            pool: Uuid::from_bytes(pool),
            index: u32_at(32),
            level,
            members,
            chunk_size: u64_at(40),
            data_size: u64_at(48),
            generation: u64_at(56),
            clean: b[64] != 0,
            states,
            checkpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            pool: Uuid::new_v4(),
            index: 2,
            level: RaidLevel::Raid6,
            members: 5,
            chunk_size: 65536,
            data_size: 1 << 30,
            generation: 7,
            clean: true,
            states: vec![SlotState::Active; 5],
            checkpoints: vec![0, 0, 4096, 0, 0],
        }
    }

    #[test]
    fn round_trip() {
        let sb = sample();
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }

    #[test]
    fn corruption_is_caught() {
        let mut b = sample().encode();
        b[50] ^= 1;
        assert_eq!(Superblock::decode(&b), Err(DecodeError::Checksum));
        let zero = vec![0u8; SUPERBLOCK_SIZE];
        assert_eq!(Superblock::decode(&zero), Err(DecodeError::Magic));
    }
}
