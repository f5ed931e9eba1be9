use super::*;
use alloc::vec;
use proptest::prelude::*;

fn every_control() -> Vec<Control> {
    let mut windows = heapless::Vec::new();
    windows.push(LayerRange { start: 0, end: 10 }).unwrap();
    windows.push(LayerRange { start: 20, end: 30 }).unwrap();
    vec![
        Control::Hello { profile: crate::profile::tests_support::sample() },
        Control::Plan {
            session: 7,
            index: 1,
            devices: 3,
            k: 2,
            windows,
            next: String::try_from("10.0.0.2:9000").unwrap(),
            f32_activations: false,
            n_ctx: 4096,
            kv_f32: false,
            model: [9; 32],
            slots: 8,
            gpu_layers: Some(3),
        },
        Control::Need { weights: true },
        Control::Weights { offset: 1 << 33, total: 1 << 34, bytes: alloc::vec![1, 2, 3] },
        Control::WeightsDigest { sha256: [7; 32] },
        Control::Pred { session: 7 },
        Control::Stats { compute_us: 1, network_us: 2, disk_us: 3 },
        Control::Ready,
        Control::TokenMeta { seq: 1, spans: spans(&[(0, 17, 3), (5, 2, 1)]), want_all: true },
        Control::Kv(KvOp::Clear),
        Control::Kv(KvOp::Remove { start: 4, end: 9 }),
        Control::Kv(KvOp::Shift { start: 9, end: 20, delta: -5 }),
        Control::Heartbeat { nonce: u64::MAX },
        Control::Stop { reason: String::try_from("done").unwrap() },
        Control::Error { reason: String::try_from("bad frame").unwrap() },
    ]
}

fn spans(list: &[(u16, u32, u32)]) -> Spans {
    list.iter().map(|&(slot, pos0, n_tokens)| Span { slot, pos0, n_tokens }).collect()
}

#[test]
fn spans_must_name_each_slot_once_in_order_and_add_up_to_the_rows() {
    assert!(spans_fit(&spans(&[(0, 17, 3), (5, 2, 1)]), 4, 6));
    let refused = [
        (spans(&[]), 0, 1),                     // no sequence
        (spans(&[(0, 0, 3)]), 4, 1),            // rows do not add up
        (spans(&[(1, 0, 1), (0, 0, 1)]), 2, 2), // out of order
        (spans(&[(1, 0, 1), (1, 5, 1)]), 2, 2), // a slot twice
        (spans(&[(2, 0, 1)]), 1, 2),            // past the plan's slots
        (spans(&[(0, 0, 0), (1, 0, 2)]), 2, 2), // an empty span
        (spans(&[(0, u32::MAX, 2)]), 2, 1),     // positions that wrap
    ];
    for (s, rows, slots) in refused {
        assert!(!spans_fit(&s, rows, slots), "{s:?} for {rows} rows, {slots} slots");
    }
}

#[test]
fn a_token_meta_with_more_spans_than_slots_does_not_decode() {
    // postcard writes [variant][seq][span count][spans…][want_all], one byte
    // each for these small values: claim MAX_SLOTS + 1 spans and send them.
    let one =
        postcard::to_allocvec(&Control::TokenMeta { seq: 1, spans: spans(&[(0, 0, 1)]), want_all: false }).unwrap();
    let (head, span, tail) = (&one[..2], &one[3..one.len() - 1], &one[one.len() - 1..]);
    let mut payload = WIRE_VERSION.to_le_bytes().to_vec();
    payload.extend_from_slice(head);
    payload.push((MAX_SLOTS + 1) as u8);
    (0..=MAX_SLOTS).for_each(|_| payload.extend_from_slice(span));
    payload.extend_from_slice(tail);
    let mut d = FrameDecoder::default();
    d.push(&frame(KIND_CONTROL, &payload).unwrap());
    assert_eq!(d.next_frame(), Err(WireError::Malformed));
    // The same bytes with MAX_SLOTS spans decode.
    payload[4] = MAX_SLOTS as u8;
    payload.drain(5..5 + span.len());
    d.push(&frame(KIND_CONTROL, &payload).unwrap());
    assert!(matches!(d.next_frame(), Ok(Some(Frame::Control(_)))));
}

#[test]
fn every_control_message_round_trips_even_byte_by_byte() {
    let mut d = FrameDecoder::default();
    for msg in every_control() {
        let bytes = encode_control(&msg).unwrap();
        for (i, b) in bytes.iter().enumerate() {
            d.push(&[*b]);
            let got = d.next_frame().unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some(Frame::Control(msg.clone().into())));
            }
        }
    }
}

#[test]
fn activations_round_trip_as_f32_exactly_and_as_f16_rounded() {
    let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 2.0).collect();
    for ty in [ActType::F32, ActType::F16] {
        let mut d = FrameDecoder::default();
        d.push(&encode_activations(7, 1, ty, 4, &values).unwrap());
        let Some(Frame::Activations(h, raw)) = d.next_frame().unwrap() else { panic!("an activation frame") };
        assert_eq!(h, ActHeader { seq: 7, round: 1, ty, n_tokens: 3, n_embd: 4 });
        let mut out = Vec::new();
        decode_values(&h, &raw, &mut out);
        let want: Vec<f32> = match ty {
            ActType::F32 => values.clone(),
            ActType::F16 => values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        };
        assert_eq!(out, want);
    }
}

#[test]
fn two_frames_in_one_push_come_out_in_order() {
    let mut bytes = encode_control(&Control::Ready).unwrap();
    bytes.extend(encode_control(&Control::Heartbeat { nonce: 3 }).unwrap());
    let mut d = FrameDecoder::default();
    d.push(&bytes);
    assert_eq!(d.next_frame().unwrap(), Some(Frame::Control(Control::Ready.into())));
    assert_eq!(d.next_frame().unwrap(), Some(Frame::Control(Control::Heartbeat { nonce: 3 }.into())));
    assert_eq!(d.next_frame().unwrap(), None);
}

#[test]
fn hostile_frames_are_refused_by_name() {
    let refuse = |bytes: &[u8]| {
        let mut d = FrameDecoder::default();
        d.push(bytes);
        d.next_frame().unwrap_err()
    };
    assert_eq!(refuse(b"GET / HTTP/1.1"), WireError::BadMagic(*b"GE"));
    assert_eq!(refuse(b"PR\x09\0\0\0\0"), WireError::UnknownKind(9));
    assert!(matches!(refuse(b"PR\x00\xff\xff\xff\xff"), WireError::TooLong { .. }));
    let mut wrong_version = encode_control(&Control::Ready).unwrap();
    wrong_version[7] = 1;
    assert_eq!(refuse(&wrong_version), WireError::Version { found: 1, supported: WIRE_VERSION });
    let mut trailing = encode_control(&Control::Ready).unwrap();
    trailing.push(0);
    trailing[3] += 1;
    assert_eq!(refuse(&trailing), WireError::Malformed);
    let mut short = encode_activations(0, 0, ActType::F32, 4, &[0.0; 8]).unwrap();
    short.truncate(short.len() - 4);
    short[3] -= 4;
    assert!(matches!(refuse(&short), WireError::ActivationLength { header_says: 32, payload: 28 }));
    let mut bad_type = encode_activations(0, 0, ActType::F32, 4, &[0.0; 4]).unwrap();
    bad_type[HEADER + 6] = 7;
    assert_eq!(refuse(&bad_type), WireError::BadActType(7));
    // Sizes whose product overflows 32 bits are refused, not wrapped.
    let mut huge = encode_activations(0, 0, ActType::F32, 4, &[0.0; 4]).unwrap();
    huge[HEADER + 8..HEADER + 16].copy_from_slice(&[0xff; 8]);
    assert!(matches!(refuse(&huge), WireError::ActivationLength { .. }));
}

proptest! {
    /// Random bytes, and valid frames with random corruption, give frames or
    /// errors: never a panic.
    #[test]
    fn random_and_corrupted_bytes_never_panic(
        noise in proptest::collection::vec(any::<u8>(), 0..400),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut d = FrameDecoder::default();
        d.push(&noise);
        let _ = d.next_frame();
        let mut good = encode_control(&every_control()[1]).unwrap();
        let i = at.index(good.len());
        good[i] = byte;
        let mut d = FrameDecoder::default();
        d.push(&good);
        let _ = d.next_frame();
    }
}
