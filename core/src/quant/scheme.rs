//! Quantization schemes by llama-quantize's names: one type for every
//! weight matrix, or a mixture (`Q4_K_M`…) that gives the tensors that
//! hurt most when coarse (the output head, some layers' `attn_v` and
//! `ffn_down`) more bits.

use super::GgmlType;

/// A target named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub name: &'static str,
    /// The type most matrices get.
    pub base: GgmlType,
    /// GGUF's `general.file_type` for the result.
    pub file_type: u32,
    mixture: Mixture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mixture {
    /// Every matrix gets the base type.
    Plain,
    Q2K,
    Q3KS,
    Q3KM,
    Q4KS,
    Q5KS,
    /// Q4_K_M and Q5_K_M: Q6_K for the output and for `attn_v`/`ffn_down`
    /// in the first and last eighth of the layers and every third between.
    KM,
}

const SCHEMES: &[(&str, GgmlType, u32, Mixture)] = {
    use GgmlType::*;
    use Mixture::*;
    &[
        ("F32", F32, 0, Plain),
        ("F16", F16, 1, Plain),
        ("BF16", BF16, 32, Plain),
        ("Q4_0", Q4_0, 2, Plain),
        ("Q4_1", Q4_1, 3, Plain),
        ("Q5_0", Q5_0, 8, Plain),
        ("Q5_1", Q5_1, 9, Plain),
        ("Q8_0", Q8_0, 7, Plain),
        ("Q2_K", Q2_K, 10, Q2K),
        ("Q3_K_S", Q3_K, 11, Q3KS),
        ("Q3_K_M", Q3_K, 12, Q3KM),
        ("Q4_K_S", Q4_K, 14, Q4KS),
        ("Q4_K_M", Q4_K, 15, KM),
        ("Q5_K_S", Q5_K, 16, Q5KS),
        ("Q5_K_M", Q5_K, 17, KM),
        ("Q6_K", Q6_K, 18, Plain),
        // Plain K types, for tests and synthetic models.
        ("Q3_K", Q3_K, 11, Plain),
        ("Q4_K", Q4_K, 14, Plain),
        ("Q5_K", Q5_K, 16, Plain),
    ]
};

/// What a matrix is, as far as the mixtures care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embedding,
    /// The output head (or the embedding when it doubles as the head).
    Output,
    AttnV,
    AttnOutput,
    FfnDown,
    Other,
}

impl Role {
    /// The role of tensor `name`; `tied` when the model has no separate output head.
    pub fn of(name: &str, tied: bool) -> Self {
        match name {
            "output.weight" => Role::Output,
            "token_embd.weight" if tied => Role::Output,
            "token_embd.weight" => Role::Embedding,
            _ if name.ends_with(".attn_v.weight") => Role::AttnV,
            _ if name.ends_with(".attn_output.weight") => Role::AttnOutput,
            _ if name.ends_with(".ffn_down.weight") => Role::FfnDown,
            _ => Role::Other,
        }
    }
}

/// llama-quantize's choice of layers that get more bits.
fn more_bits(layer: usize, n_layer: usize) -> bool {
    let eighth = n_layer / 8;
    layer < eighth || layer >= 7 * n_layer / 8 || (layer - eighth) % 3 == 2
}

impl Scheme {
    pub fn from_name(name: &str) -> Option<Self> {
        SCHEMES.iter().find(|s| s.0.eq_ignore_ascii_case(name)).map(|&(name, base, file_type, mixture)| Scheme {
            name,
            base,
            file_type,
            mixture,
        })
    }

    /// Every name [`Self::from_name`] accepts, for error messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SCHEMES.iter().map(|s| s.0)
    }

    /// The type for a matrix of `role` in `layer` (of `n_layer`), before
    /// any fallback for rows the type's blocks do not divide.
    pub fn type_for(&self, role: Role, layer: Option<usize>, n_layer: usize) -> GgmlType {
        use GgmlType::*;
        use Mixture::*;
        let more = layer.is_some_and(|l| more_bits(l, n_layer));
        let early = |n: usize| layer.is_some_and(|l| l < n);
        match (self.mixture, role) {
            (Plain, _) => self.base,
            (_, Role::Output) => Q6_K,
            (Q2K, Role::AttnV) => Q4_K,
            (Q2K, Role::FfnDown | Role::AttnOutput) => Q3_K,
            (Q3KM, Role::AttnV) => {
                if early(2) {
                    Q5_K
                } else {
                    Q4_K
                }
            }
            (Q3KM, Role::FfnDown) => {
                if more {
                    Q4_K
                } else {
                    Q3_K
                }
            }
            (Q3KM, Role::AttnOutput) => Q4_K,
            (Q4KS, Role::AttnV) if early(4) => Q5_K,
            (KM, Role::AttnV | Role::FfnDown) if more => Q6_K,
            _ => self.base,
        }
    }

    /// The type to use when `ty`'s blocks do not divide rows of `n`.
    pub fn fallback(ty: GgmlType, n: usize) -> GgmlType {
        use GgmlType::*;
        if n.is_multiple_of(ty.block_len()) {
            return ty;
        }
        let smaller = match ty {
            Q2_K | Q3_K => Q4_0,
            Q4_K => Q5_0,
            Q5_K => Q5_1,
            _ => Q8_0,
        };
        if n.is_multiple_of(smaller.block_len()) {
            smaller
        } else {
            F16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    #[test]
    fn q4_k_m_gives_the_output_and_every_third_middle_layer_six_bits() {
        let s = Scheme::from_name("q4_k_m").unwrap();
        assert_eq!((s.name, s.file_type), ("Q4_K_M", 15));
        assert_eq!(s.type_for(Role::Output, None, 32), Q6_K);
        assert_eq!(s.type_for(Role::Embedding, None, 32), Q4_K);
        let v: alloc::vec::Vec<bool> = (0..32).map(|l| s.type_for(Role::AttnV, Some(l), 32) == Q6_K).collect();
        // The first and last 4 layers, and every third between from layer 6.
        let six: alloc::vec::Vec<usize> = (0..32).filter(|&l| v[l]).collect();
        assert_eq!(six, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
        assert_eq!(s.type_for(Role::Other, Some(6), 32), Q4_K);
    }

    #[test]
    fn plain_types_apply_everywhere_and_unknown_names_are_none() {
        let s = Scheme::from_name("Q8_0").unwrap();
        assert_eq!(s.type_for(Role::Output, None, 30), Q8_0);
        assert!(Scheme::from_name("Q9_9").is_none());
        assert!(Scheme::names().any(|n| n == "Q5_K_M"));
    }

    #[test]
    fn rows_the_blocks_do_not_divide_fall_back() {
        assert_eq!(Scheme::fallback(Q4_K, 576), Q5_0);
        assert_eq!(Scheme::fallback(Q6_K, 576), Q8_0);
        assert_eq!(Scheme::fallback(Q4_K, 512), Q4_K);
        assert_eq!(Scheme::fallback(Q4_0, 100), F16);
    }
}
