//! Typed identifiers. Each is a UUID; the newtype stops a customer id from
//! being passed where an enrollment id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The 16 bytes of the UUID, used in storage keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// A business: the tenant that owns programs, customers and API keys.
    BusinessId
);
id_type!(
    /// A loyalty program of one business.
    ProgramId
);
id_type!(
    /// A customer of one business.
    CustomerId
);
id_type!(
    /// One customer in one program: the aggregate that owns a balance.
    EnrollmentId
);
id_type!(
    /// One earn, redeem or reversal.
    TransactionId
);
id_type!(
    /// One domain event, unique across the whole log.
    EventId
);
