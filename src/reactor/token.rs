//! `user_data` layout: kind (8 bits) | generation (24 bits) | slot (32 bits). A completion whose
//! generation no longer matches its slot's owner is stale and is dropped (DESIGN §3a rule 4).

/// What an operation was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Multishot accept on the listener.
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// Send on a connection.
    Send = 3,
    /// A cancel request; its completion never counts toward freeing a slot.
    Cancel = 4,
    /// Read of the signalfd.
    Signal = 5,
    /// Read of the timerfd.
    Timer = 6,
    /// A core's pidfd became readable (it exited); the slot is the pid.
    Pidfd = 7,
    /// A probe's socket op (readiness, health, batch); slot and generation name the probe's
    /// table entry. (8 was a separate readiness kind; it is not reused.)
    ProbeIo = 9,
    /// A connection's close; nothing waits for it.
    Close = 10,
    /// A drain read of a refused connection; slot and generation name its entry.
    Reject = 11,
    /// A relayed connection's connect to a member's inbound; slot and generation name the relay.
    RelayConnect = 12,
    /// A relay's receive from its client.
    RelayClientRecv = 13,
    /// A relay's send to its client.
    RelayClientSend = 14,
    /// A relay's receive from the member's inbound.
    RelayCoreRecv = 15,
    /// A relay's send to the member's inbound.
    RelayCoreSend = 16,
    /// Multishot accept on a front listener; the slot is the listener's index.
    FrontAccept = 17,
    /// A no-op that ends the next wait at once (relay work left over from a turn).
    Wake = 18,
    /// A spliced client → member direction waits for its source or destination socket.
    RelayUpPoll = 19,
    /// A spliced member → client direction waits likewise.
    RelayDownPoll = 20,
    /// A spliced client → member direction's splice (into or out of its pipe).
    RelayUpSplice = 21,
    /// A spliced member → client direction's splice.
    RelayDownSplice = 22,
}

/// Generations wrap at 24 bits; a slot would have to be reused 16 million times while one of its
/// completions is still queued for a stale one to be mistaken for current.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The op's kind.
    pub kind: Kind,
    /// The owner's generation (connections), 0 otherwise.
    pub generation: u32,
    /// The owner's slab slot (connections), 0 otherwise.
    pub slot: u32,
}

impl Token {
    /// A token for a singleton (listener, signalfd, timerfd).
    pub fn singleton(kind: Kind) -> Token {
        Token {
            kind,
            generation: 0,
            slot: 0,
        }
    }

    /// Packs into `user_data`.
    pub fn encode(self) -> u64 {
        (self.kind as u64) << 56
            | ((self.generation & GENERATION_MASK) as u64) << 32
            | self.slot as u64
    }

    /// Unpacks `user_data`; `None` for a kind this build never issues.
    pub fn decode(user_data: u64) -> Option<Token> {
        let kind = match (user_data >> 56) as u8 {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::Cancel,
            5 => Kind::Signal,
            6 => Kind::Timer,
            7 => Kind::Pidfd,
            9 => Kind::ProbeIo,
            10 => Kind::Close,
            11 => Kind::Reject,
            12 => Kind::RelayConnect,
            13 => Kind::RelayClientRecv,
            14 => Kind::RelayClientSend,
            15 => Kind::RelayCoreRecv,
            16 => Kind::RelayCoreSend,
            17 => Kind::FrontAccept,
            18 => Kind::Wake,
            19 => Kind::RelayUpPoll,
            20 => Kind::RelayDownPoll,
            21 => Kind::RelayUpSplice,
            22 => Kind::RelayDownSplice,
            _ => return None,
        };
        Some(Token {
            kind,
            generation: (user_data >> 32) as u32 & GENERATION_MASK,
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_masks_the_generation() {
        let token = Token {
            kind: Kind::Send,
            generation: GENERATION_MASK,
            slot: u32::MAX,
        };
        assert_eq!(Token::decode(token.encode()), Some(token));
        let wrapped = Token {
            generation: GENERATION_MASK + 2,
            ..token
        };
        assert_eq!(Token::decode(wrapped.encode()).unwrap().generation, 1);
        assert_eq!(Token::decode(0), None);
    }
}
