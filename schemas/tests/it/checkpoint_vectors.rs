//! Conformance of `schemas::checkpoint` with C2SP signed-note and
//! tlog-checkpoint.
//!
//! * `tests/data/vectors/c2sp/signed-note-example.json` (the spec's example): the verifier key
//!   parses (key ID `530d903a`) and formats back, the note verifies with it, and it stops
//!   verifying when any byte of its text or of its signature is changed.
//! * `tests/data/vectors/c2sp/checkpoint-examples.json`: the checkpoint and the cosigned
//!   checkpoint parse to the documented origin, size and root and round-trip byte for byte
//!   (they are parse-only: no public keys are published for them).
//! * The signer/verifier key pair and signed note of the Go reference implementation's
//!   tests (golang.org/x/mod/sumdb/note, `note_test.go`, BSD-3-Clause), reproduced byte for
//!   byte: Ed25519 is deterministic, so our signer must produce the published signature.
//! * Our own keys: signing and verification round trips, key rotation (several trusted
//!   keys), untrusted and forged signatures, and strict rejection of malformed bodies,
//!   notes and keys.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use schemas::checkpoint::{
    key_id, open_note, sign, verify_note, Checkpoint, CheckpointError, NoteSignature, SignedNote,
    SignerKey, VerifierKey,
};
use schemas::merkle::{leaf_hash, EMPTY_ROOT};
use serde_json::Value;

const C2SP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/vectors/c2sp");

fn vector(name: &str) -> Value {
    let path = Path::new(C2SP).join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (the vectors live in the repository, under tests/data/vectors/): {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string"))
}

/// Opens a note given as raw bytes: invalid UTF-8 is a rejection too.
fn open_bytes(bytes: &[u8], keys: &[VerifierKey]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    open_note(text, keys).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn c2sp_signed_note_example_verifies_and_tampering_fails() {
    let v = vector("signed-note-example.json");
    let key = VerifierKey::parse(s(&v, "vkey")).unwrap();
    assert_eq!(key.name(), "example.com/foo");
    assert_eq!(key.key_id(), 0x530d903a);
    assert_eq!(key.key_id(), key_id(key.name(), &key.public_key()));
    assert_eq!(key.to_string(), s(&v, "vkey"));

    let note_text = s(&v, "signed_note");
    assert!(v["want_valid"].as_bool().unwrap());
    let (note, names) = open_note(note_text, std::slice::from_ref(&key)).unwrap();
    assert_eq!(note.body, s(&v, "note_text"));
    assert_eq!(names, vec!["example.com/foo".to_owned()]);
    assert_eq!(note.to_text(), note_text);
    assert_eq!(note.signatures.len(), 1);
    assert_eq!(note.signatures[0].key_id, 0x530d903a);
    assert_eq!(note.signatures[0].signature.len(), 64);
    // It is a signed note but not a checkpoint: verify_note checks the body too.
    assert!(matches!(
        verify_note(note_text, std::slice::from_ref(&key)),
        Err(CheckpointError::BadCheckpoint(_))
    ));

    let keys = std::slice::from_ref(&key);
    let body_len = note.body.len();
    let sig_line_start = body_len + 1;
    let b64_start = note_text[sig_line_start..].rfind(' ').unwrap() + sig_line_start + 1;
    let b64_end = note_text.len() - 1;
    let bytes = note_text.as_bytes();
    let mut rejected = 0;
    // Every byte of the body, with several different changes.
    for i in 0..body_len {
        for delta in [1u8, 0x20, 0x80] {
            let mut t = bytes.to_vec();
            t[i] ^= delta;
            assert!(
                open_bytes(&t, keys).is_err(),
                "body byte {i} ^ {delta:#x} accepted"
            );
            rejected += 1;
        }
    }
    // Every character of the base64 signature, replaced by other base64 characters.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for i in b64_start..b64_end {
        for &c in alphabet.iter().skip(i % 16).step_by(16) {
            if c == bytes[i] {
                continue;
            }
            let mut t = bytes.to_vec();
            t[i] = c;
            assert!(
                open_bytes(&t, keys).is_err(),
                "signature char {i} -> {} accepted",
                c as char
            );
            rejected += 1;
        }
    }
    // Every bit of the decoded signature (re-encoded canonically): a forged signature by a
    // trusted key, so the whole note is rejected as such.
    let raw = B64.decode(&note_text[b64_start..b64_end]).unwrap();
    for i in 4..raw.len() {
        for bit in [i % 8, (i + 3) % 8] {
            let mut r = raw.clone();
            r[i] ^= 1 << bit;
            let t = format!("{}{}\n", &note_text[..b64_start], B64.encode(&r));
            assert_eq!(
                open_note(&t, keys).unwrap_err(),
                CheckpointError::InvalidSignature {
                    name: "example.com/foo".into(),
                    key_id: 0x530d903a
                }
            );
            rejected += 1;
        }
    }
    // A changed key ID makes the signature one by an unknown key: ignored, so no trusted
    // signature remains.
    let mut r = raw.clone();
    r[0] ^= 1;
    let t = format!("{}{}\n", &note_text[..b64_start], B64.encode(&r));
    assert_eq!(
        open_note(&t, keys).unwrap_err(),
        CheckpointError::NoTrustedSignature
    );
    assert!(rejected > 500, "{rejected}");
}

#[test]
fn c2sp_checkpoint_examples_parse_and_round_trip() {
    let v = vector("checkpoint-examples.json");
    let want_root: [u8; 32] = B64
        .decode(s(&v, "want_root_b64"))
        .unwrap()
        .try_into()
        .unwrap();
    for (field, n_sigs) in [("checkpoint", 1), ("cosigned_checkpoint", 2)] {
        let text = s(&v, field);
        let note = SignedNote::parse(text).unwrap();
        assert_eq!(note.signatures.len(), n_sigs, "{field}");
        assert_eq!(note.to_text(), text, "{field} round trip");
        let cp = Checkpoint::parse_body(&note.body).unwrap();
        assert_eq!(cp.origin, s(&v, "want_origin"));
        assert_eq!(cp.size, v["want_size"].as_u64().unwrap());
        assert_eq!(cp.root, want_root);
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.to_body().unwrap(), note.body, "{field} body round trip");
        assert_eq!(note.signatures[0].name, "example.com/behind-the-sofa");
        // No published key: with any other trusted key every signature is ignored.
        let other = SignerKey::from_seed("example.com/behind-the-sofa", [1; 32])
            .unwrap()
            .verifier();
        assert_eq!(
            verify_note(text, &[other]).unwrap_err(),
            CheckpointError::NoTrustedSignature
        );
    }
    // The witness cosignature (type 0x04: 8-byte timestamp + 64-byte signature) is parsed
    // as an opaque signature by another key.
    let cosigned = SignedNote::parse(s(&v, "cosigned_checkpoint")).unwrap();
    assert_eq!(cosigned.signatures[1].name, "witness.example.com/w1");
    assert_eq!(cosigned.signatures[1].signature.len(), 72);
}

const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn go_reference_keys_and_signature_are_reproduced() {
    let signer = SignerKey::parse(GO_SKEY).unwrap();
    assert_eq!(signer.to_text(), GO_SKEY);
    assert_eq!(signer.verifier().to_string(), GO_VKEY);
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(sign(GO_TEXT, &signer).unwrap(), GO_SIG);
    let note = format!("{GO_TEXT}\n{GO_SIG}");
    let vkey = VerifierKey::parse(GO_VKEY).unwrap();
    let (opened, names) = open_note(&note, std::slice::from_ref(&vkey)).unwrap();
    assert_eq!(opened.body, GO_TEXT);
    assert_eq!(names, vec!["PeterNeumann".to_owned()]);
    assert_eq!(
        SignedNote::sign(GO_TEXT, &[&signer]).unwrap().to_text(),
        note
    );
    // Every proper substring and every single-byte increment of the key text is refused.
    let b = GO_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                if let Ok(t) = std::str::from_utf8(&b[i..j]) {
                    assert!(VerifierKey::parse(t).is_err(), "{t:?} accepted");
                }
            }
        }
    }
    for i in 0..b.len() {
        let mut t = b.to_vec();
        t[i] += 1;
        if let Ok(t) = std::str::from_utf8(&t) {
            assert!(VerifierKey::parse(t).is_err(), "{t:?} accepted");
        }
    }
}

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        origin: "claim-ledger.example/log".into(),
        size,
        root: if size == 0 {
            EMPTY_ROOT
        } else {
            leaf_hash(&size.to_be_bytes())
        },
        extensions: Vec::new(),
    }
}

#[test]
fn sign_and_verify_checkpoints_with_rotation() {
    let old = SignerKey::from_seed("claim-ledger.example/log", [1; 32]).unwrap();
    let new = SignerKey::from_seed("claim-ledger.example/log", [2; 32]).unwrap();
    assert_ne!(old.key_id(), new.key_id());
    let trusted = [old.verifier(), new.verifier()];

    let cp = checkpoint(42);
    let body = cp.to_body().unwrap();
    assert_eq!(
        body,
        format!(
            "claim-ledger.example/log\n42\n{}\n",
            B64.encode(leaf_hash(&42u64.to_be_bytes()))
        )
    );
    // Signed by the old key: still verifiable after rotation.
    let by_old = format!("{body}\n{}", sign(&body, &old).unwrap());
    let (got, names) = verify_note(&by_old, &trusted).unwrap();
    assert_eq!(got, cp);
    assert_eq!(names, vec!["claim-ledger.example/log".to_owned()]);
    // Only the new key trusted: the old signature is by an unknown key (same name, other
    // ID), ignored, so nothing trusted signed it.
    assert_eq!(
        verify_note(&by_old, &[new.verifier()]).unwrap_err(),
        CheckpointError::NoTrustedSignature
    );
    // Signed by both plus an untrusted witness: the witness is ignored.
    let witness = SignerKey::from_seed("witness.example/w1", [3; 32]).unwrap();
    let note = SignedNote::sign(&body, &[&old, &witness, &new]).unwrap();
    let text = note.to_text();
    assert_eq!(SignedNote::parse(&text).unwrap(), note);
    let (_, names) = verify_note(&text, &trusted).unwrap();
    assert_eq!(names, vec!["claim-ledger.example/log".to_owned()]);
    let (_, names) = verify_note(&text, &[witness.verifier(), new.verifier()]).unwrap();
    assert_eq!(
        names,
        vec![
            "witness.example/w1".to_owned(),
            "claim-ledger.example/log".to_owned()
        ]
    );
    // A trusted key's signature over another body (a fork at the same size) is rejected,
    // even next to a valid signature by another trusted key.
    let forked = Checkpoint {
        root: leaf_hash(b"fork"),
        ..cp.clone()
    }
    .to_body()
    .unwrap();
    let forged_line = sign(&forked, &new).unwrap();
    let mixed = format!("{body}\n{}{forged_line}", sign(&body, &old).unwrap());
    assert_eq!(
        verify_note(&mixed, &trusted).unwrap_err(),
        CheckpointError::InvalidSignature {
            name: "claim-ledger.example/log".into(),
            key_id: new.key_id()
        }
    );
    // Extension lines are signed and round-trip.
    let ext = Checkpoint {
        extensions: vec!["ext one".into(), "— two".into()],
        ..checkpoint(0)
    };
    let text = SignedNote::sign(&ext.to_body().unwrap(), &[&new])
        .unwrap()
        .to_text();
    assert_eq!(verify_note(&text, &trusted).unwrap().0, ext);
    // Duplicate signature lines by one key count once.
    let dup = format!("{body}\n{0}{0}", sign(&body, &new).unwrap());
    assert_eq!(verify_note(&dup, &trusted).unwrap().1.len(), 1);
}

#[test]
fn malformed_checkpoint_bodies_are_rejected() {
    let root = B64.encode([7u8; 32]);
    let good = format!("o\n1\n{root}\n");
    assert!(Checkpoint::parse_body(&good).is_ok());
    let bad = [
        String::new(),
        format!("o\n1\n{root}"),                        // no final newline
        "o\n1\n".into(),                                // no root line
        "o\n".into(),                                   // no size line
        format!("\n1\n{root}\n"),                       // empty origin
        format!("o\n01\n{root}\n"),                     // leading zero
        format!("o\n+1\n{root}\n"),                     // sign
        format!("o\n-1\n{root}\n"),                     // negative
        format!("o\n 1\n{root}\n"),                     // space
        format!("o\n1.0\n{root}\n"),                    // not an integer
        format!("o\n18446744073709551616\n{root}\n"),   // u64::MAX + 1
        format!("o\n\n{root}\n"),                       // empty size
        format!("o\n1\n{}\n", &root[..root.len() - 1]), // unpadded base64
        format!("o\n1\n{}\n", B64.encode([7u8; 31])),   // 31-byte root
        format!("o\n1\n{}\n", B64.encode([7u8; 33])),   // 33-byte root
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".into(), // non-canonical bits
        format!("o\n1\n{}\n", B64.encode([0xfb; 32]).replace('+', "-")), // URL alphabet
        format!("o\n1\n{root}\n\n"),                    // empty extension line
        format!("o\n1\n{root}\next\n\n"),               // empty extension line
        format!("o\r\n1\n{root}\n"),                    // CR
        format!("o\t\n1\n{root}\n"),                    // tab
        format!("o\n1\r\n{root}\n"),                    // CR in the size
    ];
    for b in &bad {
        assert!(Checkpoint::parse_body(b).is_err(), "{b:?} accepted");
    }
    assert_eq!(
        Checkpoint::parse_body(
            "o\n18446744073709551615\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        )
        .unwrap()
        .size,
        u64::MAX
    );
    let z = Checkpoint::parse_body("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n").unwrap();
    assert_eq!((z.size, z.root), (0, EMPTY_ROOT));
    // to_body refuses what parse_body would refuse.
    for origin in ["", "a\nb", "a\rb"] {
        let cp = Checkpoint {
            origin: origin.into(),
            ..checkpoint(1)
        };
        assert!(cp.to_body().is_err(), "{origin:?}");
    }
    for ext in ["", "a\nb", "\u{7}"] {
        let cp = Checkpoint {
            extensions: vec![ext.into()],
            ..checkpoint(1)
        };
        assert!(cp.to_body().is_err(), "{ext:?}");
    }
}

#[test]
fn malformed_notes_are_rejected() {
    let key = SignerKey::from_seed("k", [9; 32]).unwrap();
    let body = checkpoint(3).to_body().unwrap();
    let line = sign(&body, &key).unwrap();
    let good = format!("{body}\n{line}");
    assert!(open_note(&good, &[key.verifier()]).is_ok());
    let sig_b64 = line.trim_end().rsplit(' ').next().unwrap();
    let bad = [
        body.clone(),                                      // no signatures
        format!("{body}\n"),                               // blank line, no signatures
        format!("{body}{line}"),                           // no blank line
        format!("{body}\n{}", line.trim_end()),            // no final newline
        format!("{body}\n{line}\n"),                       // trailing blank line
        format!("{body}\n- k {sig_b64}\n"),                // ASCII dash
        format!("{body}\n\u{2014}k {sig_b64}\n"),          // no space after the dash
        format!("{body}\n\u{2014} k  {sig_b64}\n"),        // two spaces
        format!("{body}\n\u{2014} k\n"),                   // no signature
        format!("{body}\n\u{2014} k \n"),                  // empty signature
        format!("{body}\n\u{2014} k+1 {sig_b64}\n"),       // plus in the name
        format!("{body}\n\u{2014}  {sig_b64}\n"),          // empty name
        format!("{body}\n\u{2014} k AAAAAA==\n"),          // 4 bytes: no signature
        format!("{body}\n\u{2014} k {}\n", &sig_b64[1..]), // bad base64
        format!("{body}\n{line}junk\n"),                   // not a signature line
        format!("{body}\n{}", line.replace('\n', "\r\n")), // CR
        format!("\u{1}{body}\n{line}"),                    // control character
    ];
    for t in &bad {
        assert!(SignedNote::parse(t).is_err(), "{t:?} parsed");
        assert!(open_note(t, &[key.verifier()]).is_err(), "{t:?} opened");
    }
    // At most 100 signatures.
    let many = format!("{body}\n{}", line.repeat(101));
    assert_eq!(
        SignedNote::parse(&many).unwrap_err(),
        CheckpointError::TooManySignatures
    );
    assert!(open_note(&format!("{body}\n{}", line.repeat(100)), &[key.verifier()]).is_ok());
    // The text is split at the last blank line: a text may contain blank lines.
    let text = "a\n\nb\n";
    let n = SignedNote::sign(text, &[&key]).unwrap().to_text();
    assert_eq!(open_note(&n, &[key.verifier()]).unwrap().0.body, text);
    // Signing refuses texts that cannot be notes.
    for t in ["", "no newline", "a\u{0}\n"] {
        assert!(sign(t, &key).is_err(), "{t:?}");
    }
    // Line-level parsing and formatting agree.
    let sig = NoteSignature::parse_line(&line).unwrap();
    assert_eq!(sig.to_line(), line);
    assert_eq!(sig.key_id, key.key_id());
}

#[test]
fn malformed_keys_are_rejected() {
    let signer = SignerKey::from_seed("example.com/log", [5; 32]).unwrap();
    let vkey = signer.verifier().to_string();
    let skey = signer.to_text();
    assert_eq!(VerifierKey::parse(&vkey).unwrap(), signer.verifier());
    assert_eq!(SignerKey::parse(&skey).unwrap().to_text(), skey);
    let (name_id, data) = vkey.rsplit_once('+').unwrap();
    let (name, id) = name_id.split_once('+').unwrap();
    let ed_key = signer.verifier().public_key();
    let mut with_type = vec![0x02];
    with_type.extend_from_slice(&ed_key);
    let bad_v = [
        format!("{name}+{id}"),
        format!("{name}+{id}+"),
        format!("+{id}+{data}"),
        format!("exa mple+{id}+{data}"),
        format!("{name}+{}+{data}", &id[1..]),
        format!("{name}+0{id}+{data}"),
        format!(
            "{name}+{}+{data}",
            id.replace(|c: char| c.is_ascii_hexdigit(), "g")
        ),
        format!("{name}+00000000+{data}"),
        format!("other.example+{id}+{data}"),
        format!("{name}+{id}+{}", B64.encode(&with_type)),
        format!("{name}+{id}+{}", B64.encode(&with_type[1..])),
        format!("{name}+{id}+{}", B64.encode([1u8; 32])),
        format!("{name}+{id}+{data} "),
        format!("{vkey}\n"),
    ];
    for k in &bad_v {
        assert!(VerifierKey::parse(k).is_err(), "{k:?} accepted");
    }
    assert_eq!(
        VerifierKey::parse(&format!("{name}+{id}+{}", B64.encode(&with_type))).unwrap_err(),
        CheckpointError::UnsupportedKeyType(2)
    );
    assert!(matches!(
        VerifierKey::parse(&format!("{name}+00000000+{data}")).unwrap_err(),
        CheckpointError::KeyIdMismatch { .. }
    ));
    // Upper-case hex is accepted (as by the Go implementation); output is lower case.
    let upper = format!("{name}+{}+{data}", id.to_uppercase());
    assert_eq!(VerifierKey::parse(&upper).unwrap().to_string(), vkey);
    let bad_s = [
        skey.replacen("PRIVATE", "PUBLIC", 1),
        skey.replacen("+KEY+", "+KEYS+", 1),
        skey.replacen(id, "00000000", 1),
        skey["PRIVATE+KEY+".len()..].to_owned(),
        vkey.clone(),
        format!("{skey}\n"),
    ];
    for k in &bad_s {
        assert!(SignerKey::parse(k).is_err(), "{k:?} accepted");
    }
    for name in ["", "a b", "a+b", "a\u{2003}b"] {
        assert_eq!(
            SignerKey::from_seed(name, [0; 32]).unwrap_err(),
            CheckpointError::InvalidKeyName(name.into())
        );
    }
    // The secret never shows in Debug output.
    let secret = skey.rsplit('+').next().unwrap();
    assert!(!format!("{signer:?}").contains(secret));
}
