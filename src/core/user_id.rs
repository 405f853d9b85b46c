//! VMess/VLESS user ids that are not UUIDs (issue 12 part 3).
//!
//! Xray takes any string of 1 to 30 bytes as an id and maps it to a UUID: version 5 over the
//! all-zero namespace (`uuid.ParseString` in Xray-core's common/uuid), so panels hand out ids
//! such as `alice`. sing-box 1.14 and mihomo 1.19 do the same for any length. V2Ray 4.34
//! refuses them ("failed to parse ID > invalid UUID: alice"), so for V2Ray xrat renders the
//! mapped UUID itself; it is the UUID the Xray or sing-box server derives from the same string.
//! Ids Xray would refuse too (empty, or longer than 30 bytes and not a UUID) are refused for the
//! Xray family by `support`, naming the field.

/// The longest non-UUID id Xray maps (longer ones are "invalid UUID").
pub const MAPPED_ID_BYTES_MAX: usize = 30;

/// True for the 36-character `8-4-4-4-12` hex form or 32 hex digits (what V2Ray parses).
pub fn is_uuid(id: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match id.len() {
        32 => hex(id),
        36 => {
            let parts: Vec<&str> = id.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| hex(p))
        }
        _ => false,
    }
}

/// How the Xray family reads `id`: as it is, mapped, or refused.
pub fn xray_reads(id: &str) -> Option<IdForm> {
    if is_uuid(id) {
        Some(IdForm::Uuid)
    } else if (1..=MAPPED_ID_BYTES_MAX).contains(&id.len()) {
        Some(IdForm::Mapped)
    } else {
        None
    }
}

/// See [`xray_reads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    /// A UUID already.
    Uuid,
    /// A string Xray maps with [`uuid_v5`].
    Mapped,
}

/// Xray's mapping: SHA-1 over 16 zero bytes then the string, first 16 bytes, version 5, RFC 4122
/// variant, in the 8-4-4-4-12 form.
pub fn uuid_v5(id: &str) -> String {
    let mut hasher = sha1_smol::Sha1::new();
    hasher.update(&[0u8; 16]);
    hasher.update(id.as_bytes());
    let digest = hasher.digest().bytes();
    let mut u = [0u8; 16];
    u.copy_from_slice(&digest[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The id to render for V2Ray: a UUID as given, a short string mapped as Xray maps it.
pub fn for_v2ray(id: &str) -> String {
    match xray_reads(id) {
        Some(IdForm::Mapped) => uuid_v5(id),
        _ => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert!(is_uuid("b831381d-6324-4d53-ad4f-8cda48b30811"));
        assert!(is_uuid("b831381d63244d53ad4f8cda48b30811"));
        assert!(!is_uuid("b831381d-6324-4d53-ad4f-8cda48b3081g"));
        assert!(!is_uuid("b831381d6-324-4d53-ad4f-8cda48b30811"));
        assert_eq!(xray_reads("alice"), Some(IdForm::Mapped));
        assert_eq!(xray_reads(&"a".repeat(30)), Some(IdForm::Mapped));
        assert_eq!(xray_reads(&"a".repeat(31)), None);
        assert_eq!(xray_reads(""), None);
        assert_eq!(
            for_v2ray("b831381d-6324-4d53-ad4f-8cda48b30811"),
            "b831381d-6324-4d53-ad4f-8cda48b30811"
        );
    }

    #[test]
    fn mapping_is_a_version_5_uuid_of_the_zero_namespace() {
        let mapped = uuid_v5("hello-world");
        assert!(is_uuid(&mapped));
        assert_eq!(&mapped[14..15], "5");
        assert!(matches!(&mapped[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(mapped, uuid_v5("hello-world"));
        assert_ne!(mapped, uuid_v5("hello-worle"));
    }
}
