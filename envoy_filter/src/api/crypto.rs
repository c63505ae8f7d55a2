//! What `handle:importPublicKey()` and `handle:verifySignature()` call:
//! RSA PKCS#1 v1.5 signatures over SHA-1 and SHA-2, with keys given as DER
//! SubjectPublicKeyInfo, as the stock filter accepts them.

use std::ffi::{c_char, c_int};

use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;

use crate::api::bytes;

/// The signature matches.
const VERIFIED: c_int = 1;
/// It does not ("Failed to verify digest. Error code: 0").
const MISMATCH: c_int = 0;
/// The hash is not one of sha1, sha224, sha256, sha384, sha512.
const UNSUPPORTED_HASH: c_int = -3;
/// The key is not a public key we can use ("Failed to initialize digest verify.").
const BAD_KEY: c_int = -4;

fn verify<D>(key: RsaPublicKey, signature: &[u8], data: &[u8]) -> c_int
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    let Ok(signature) = Signature::try_from(signature) else { return MISMATCH };
    match VerifyingKey::<D>::new(key).verify(data, &signature) {
        Ok(()) => VERIFIED,
        Err(_) => MISMATCH,
    }
}

/// 1 if `der` is a public key `verify_signature` can use, else 0.
///
/// # Safety
/// `der` is readable for `len` bytes.
pub unsafe extern "C" fn public_key_valid(der: *const c_char, len: usize) -> c_int {
    c_int::from(RsaPublicKey::from_public_key_der(bytes(der, len)).is_ok())
}

/// Verifies `signature` of `data` with the DER public key `key` and hash
/// `hash` (case-insensitive): 1 verified, 0 not, -3 unsupported hash, -4 bad key.
///
/// # Safety
/// Every pointer is readable for the length that follows it.
pub unsafe extern "C" fn verify_signature(
    hash: *const c_char,
    hash_len: usize,
    key: *const c_char,
    key_len: usize,
    signature: *const c_char,
    signature_len: usize,
    data: *const c_char,
    data_len: usize,
) -> c_int {
    let hash = bytes(hash, hash_len).to_ascii_lowercase();
    let (signature, data) = (bytes(signature, signature_len), bytes(data, data_len));
    let verify_with: fn(RsaPublicKey, &[u8], &[u8]) -> c_int = match hash.as_slice() {
        b"sha1" => verify::<sha1::Sha1>,
        b"sha224" => verify::<sha2::Sha224>,
        b"sha256" => verify::<sha2::Sha256>,
        b"sha384" => verify::<sha2::Sha384>,
        b"sha512" => verify::<sha2::Sha512>,
        _ => return UNSUPPORTED_HASH,
    };
    match RsaPublicKey::from_public_key_der(bytes(key, key_len)) {
        Ok(key) => verify_with(key, signature, data),
        Err(_) => BAD_KEY,
    }
}
