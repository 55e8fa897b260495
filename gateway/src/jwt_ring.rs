//! JWT signatures on ring, the crypto library the TLS stack already links (`uag_core::crypto`).
//!
//! jsonwebtoken ships providers for aws-lc-rs and for the RustCrypto crates; either would add a
//! second crypto library to a binary that must fit 20 MiB on aarch64. This provider covers every
//! algorithm jsonwebtoken names (HS, RS, PS, ES256/384, EdDSA), signing included: the gateway
//! only verifies, but tests and tools sign through the same provider.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as sig, KeyPair};
use ring::{digest, hmac, rand};

/// The provider; [`install`] makes it the process default.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_component_from_private_key,
        compute_digest,
    },
};

/// Makes [`PROVIDER`] jsonwebtoken's process default. Call it before the first token is signed
/// or checked: jsonwebtoken fixes its default at first use, and with no crypto feature enabled
/// that default panics. Idempotent.
pub fn install() {
    // The only error is "already installed".
    let _ = PROVIDER.install_default();
}

fn hmac_of(alg: Algorithm) -> Option<hmac::Algorithm> {
    match alg {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

/// An RSA algorithm as ring signs (padding and hash) and verifies (the same, key sizes 2048-8192).
fn rsa_of(alg: Algorithm) -> Option<(&'static dyn sig::RsaEncoding, &'static sig::RsaParameters)> {
    Some(match alg {
        Algorithm::RS256 => (&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => (&sig::RSA_PKCS1_SHA384, &sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => (&sig::RSA_PKCS1_SHA512, &sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => (&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => (&sig::RSA_PSS_SHA384, &sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => (&sig::RSA_PSS_SHA512, &sig::RSA_PSS_2048_8192_SHA512),
        _ => return None,
    })
}

/// An ECDSA algorithm: ring's signing and verification algorithms, its curve, and the length
/// of one coordinate of a public point.
struct Ecdsa {
    signing: &'static sig::EcdsaSigningAlgorithm,
    verification: &'static sig::EcdsaVerificationAlgorithm,
    curve: EllipticCurve,
    coordinate_len: usize,
}

fn ecdsa_of(alg: Algorithm) -> Option<Ecdsa> {
    Some(match alg {
        Algorithm::ES256 => Ecdsa {
            signing: &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            verification: &sig::ECDSA_P256_SHA256_FIXED,
            curve: EllipticCurve::P256,
            coordinate_len: 32,
        },
        Algorithm::ES384 => Ecdsa {
            signing: &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            verification: &sig::ECDSA_P384_SHA384_FIXED,
            curve: EllipticCurve::P384,
            coordinate_len: 48,
        },
        _ => return None,
    })
}

/// A key of another family than the algorithm's is refused here, before any signature is
/// computed: an HS256 token "signed" with an RSA public key as its secret must not verify.
fn same_family(alg: Algorithm, family: AlgorithmFamily) -> Result<(), Error> {
    if alg.family() == family { Ok(()) } else { Err(ErrorKind::InvalidKeyFormat.into()) }
}

struct Signer {
    alg: Algorithm,
    key: EncodingKey,
}

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        sign(self.alg, self.key.as_bytes(), msg).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn sign(alg: Algorithm, key: &[u8], msg: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
    let rng = rand::SystemRandom::new();
    if let Some(h) = hmac_of(alg) {
        return Ok(hmac::sign(&hmac::Key::new(h, key), msg).as_ref().to_vec());
    }
    if let Some((encoding, _)) = rsa_of(alg) {
        let pair = sig::RsaKeyPair::from_der(key).map_err(|_| ring::error::Unspecified)?;
        let mut out = vec![0; pair.public().modulus_len()];
        pair.sign(encoding, &rng, msg, &mut out)?;
        return Ok(out);
    }
    if let Some(ecdsa) = ecdsa_of(alg) {
        let pair = sig::EcdsaKeyPair::from_pkcs8(ecdsa.signing, key, &rng).map_err(|_| ring::error::Unspecified)?;
        return Ok(pair.sign(&rng, msg)?.as_ref().to_vec());
    }
    // EdDSA: PKCS#8 v1 files (what `openssl genpkey` writes) carry no public key.
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key).map_err(|_| ring::error::Unspecified)?;
    Ok(pair.sign(msg).as_ref().to_vec())
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    same_family(*alg, key.family())?;
    Ok(Box::new(Signer { alg: *alg, key: key.clone() }))
}

struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        verify(self.alg, &self.key, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn verify(alg: Algorithm, key: &DecodingKey, msg: &[u8], signature: &[u8]) -> Result<(), ring::error::Unspecified> {
    if let Some((_, params)) = rsa_of(alg) {
        return match key.kind() {
            DecodingKeyKind::SecretOrDer(der) => sig::UnparsedPublicKey::new(params, der).verify(msg, signature),
            DecodingKeyKind::RsaModulusExponent { n, e } => sig::RsaPublicKeyComponents { n, e }.verify(params, msg, signature),
        };
    }
    let bytes = key.try_get_as_bytes().map_err(|_| ring::error::Unspecified)?;
    if let Some(h) = hmac_of(alg) {
        return hmac::verify(&hmac::Key::new(h, bytes), msg, signature);
    }
    if let Some(ecdsa) = ecdsa_of(alg) {
        return sig::UnparsedPublicKey::new(ecdsa.verification, bytes).verify(msg, signature);
    }
    sig::UnparsedPublicKey::new(&sig::ED25519, bytes).verify(msg, signature)
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    same_family(*alg, key.family())?;
    Ok(Box::new(Verifier { alg: *alg, key: key.clone() }))
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pair = sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let components = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((components.n, components.e))
}

/// The modulus and exponent of a PKCS#1 `RSAPublicKey` (DER: a sequence of two integers), which
/// ring verifies with but does not take apart.
fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let invalid = || Error::from(ErrorKind::InvalidRsaKey("not a DER RSAPublicKey".into()));
    let (body, rest) = der_element(der, 0x30).ok_or_else(invalid)?;
    let (n, after_n) = der_element(body, 0x02).ok_or_else(invalid)?;
    let (e, after_e) = der_element(after_n, 0x02).ok_or_else(invalid)?;
    if !rest.is_empty() || !after_e.is_empty() {
        return Err(invalid());
    }
    let strip = |v: &[u8]| v.iter().position(|b| *b != 0).map_or_else(Vec::new, |i| v[i..].to_vec());
    Ok((strip(n), strip(e)))
}

/// One DER element with tag `tag` at the start of `input`: its contents and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let count = usize::from(len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn ec_components_from_private_key(der: &[u8], alg: Algorithm) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let Ecdsa { signing, curve, coordinate_len: half, .. } = ecdsa_of(alg).ok_or(ErrorKind::InvalidEcdsaKey)?;
    let pair = sig::EcdsaKeyPair::from_pkcs8(signing, der, &rand::SystemRandom::new()).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
    // An uncompressed point: 0x04, then x and y.
    match pair.public_key().as_ref() {
        [4, point @ ..] if point.len() == 2 * half => Ok((curve, point[..half].to_vec(), point[half..].to_vec())),
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_component_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
    match curve {
        EllipticCurve::Ed25519 => {
            Ok(sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| ErrorKind::InvalidEddsaKey)?.public_key().as_ref().to_vec())
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(alg: Algorithm, encoding: &EncodingKey, decoding: &DecodingKey) {
        install();
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &serde_json::json!({"sub": "kiosk"}), encoding).unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, decoding, &validation).unwrap().claims;
        assert_eq!(claims["sub"], "kiosk", "{alg:?}");
        // One flipped bit of the signature and the token is refused.
        let (head, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = signature.as_bytes().to_vec();
        bytes[2] = if bytes[2] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(bytes).unwrap());
        assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, decoding, &validation).is_err(), "{alg:?} accepted a forged signature");
    }

    #[test]
    fn hmac_signs_and_verifies_and_refuses_a_changed_signature() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            roundtrip(alg, &EncodingKey::from_secret(b"kiosk-secret"), &DecodingKey::from_secret(b"kiosk-secret"));
        }
    }

    #[test]
    fn ecdsa_and_eddsa_keys_made_by_ring_sign_and_verify() {
        let rng = rand::SystemRandom::new();
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(ecdsa_of(alg).unwrap().signing, &rng).unwrap();
            let (_, x, y) = ec_components_from_private_key(pkcs8.as_ref(), alg).unwrap();
            let mut point = vec![4];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            roundtrip(alg, &EncodingKey::from_ec_der(pkcs8.as_ref()), &DecodingKey::from_ec_der(&point));
        }
        let pkcs8 = sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let public = ed_component_from_private_key(pkcs8.as_ref(), &EllipticCurve::Ed25519).unwrap();
        roundtrip(Algorithm::EdDSA, &EncodingKey::from_ed_der(pkcs8.as_ref()), &DecodingKey::from_ed_der(&public));
    }

    #[test]
    fn a_key_of_another_family_is_refused_before_any_signature_is_checked() {
        install();
        let rsa_public = DecodingKey::from_rsa_raw_components(&[0xc5; 256], &[1, 0, 1]);
        assert!(new_verifier(&Algorithm::HS256, &rsa_public).is_err());
        assert!(new_verifier(&Algorithm::RS256, &DecodingKey::from_secret(b"s")).is_err());
        assert!(new_signer(&Algorithm::ES256, &EncodingKey::from_secret(b"s")).is_err());
    }

    #[test]
    fn the_parts_of_a_der_rsa_public_key_are_read_and_bad_der_is_refused() {
        // SEQUENCE { INTEGER 0x00c5.., INTEGER 65537 }, the modulus 129 bytes long (long form).
        let mut n = vec![0x00];
        n.extend_from_slice(&[0xc5; 128]);
        let mut body = vec![0x02, 0x81, 129];
        body.extend_from_slice(&n);
        body.extend_from_slice(&[0x02, 0x03, 1, 0, 1]);
        let mut der = vec![0x30, 0x81, u8::try_from(body.len()).unwrap()];
        der.extend_from_slice(&body);
        let (modulus, exponent) = rsa_components_from_public_key(&der).unwrap();
        assert_eq!(modulus, vec![0xc5; 128]);
        assert_eq!(exponent, vec![1, 0, 1]);
        assert!(rsa_components_from_public_key(&der[..der.len() - 1]).is_err());
        assert!(rsa_components_from_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(rsa_components_from_public_key(b"").is_err());
    }
}
