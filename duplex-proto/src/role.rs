//! Client or server.

/// Which end of the connection this side is.
///
/// The role decides masking (RFC 6455 §5.3: clients mask every frame, servers never do) and
/// which half of the permessage-deflate parameters applies to our compressor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that sent the opening handshake request.
    Client,
    /// The side that accepted the opening handshake.
    Server,
}

impl Role {
    /// The other end's role.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}
