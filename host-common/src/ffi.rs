//! The C ABI: load a model, tokenize, generate with a callback per token,
//! free. The header (`prima.h`) is generated from this file by cbindgen.
//!
//! Every entry point returns a [`PrimaStatus`] and writes a message into the
//! caller's `err` buffer on failure; a Rust panic is caught here and becomes
//! `PRIMA_STATUS_PANIC`, never an unwind across the boundary.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use prima_core::sampler::SamplerConfig;
use prima_core::tokenizer::Tokenizer;
use prima_core::KvType;

use crate::generate::{generate, Local, SessionShape};
use crate::mapped::MappedFile;
use crate::pool::Pool;

/// What a call returned.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaStatus {
    Ok = 0,
    /// A null pointer, bad UTF-8 or an out-of-range number.
    InvalidArgument = 1,
    /// The model file cannot be opened, mapped or parsed.
    BadModel = 2,
    /// Evaluation failed (for example the context overflowed).
    Failed = 3,
    /// The output buffer is too small; the needed size was written.
    BufferTooSmall = 4,
    /// A bug inside prima: it was caught at the boundary.
    Panic = 5,
}

/// A loaded model. Opaque to C.
pub struct PrimaModel {
    file: MappedFile,
    tokenizer: Tokenizer,
    pool: Pool,
}

/// Called with each generated token id and its text (UTF-8, not
/// NUL-terminated, possibly empty while a character is incomplete). Return
/// false to stop generating.
pub type PrimaTokenCallback =
    Option<extern "C" fn(user: *mut c_void, id: u32, text: *const c_char, len: usize) -> bool>;

/// Writes `msg` into `err` (NUL-terminated, truncated to `err_len`).
fn report(err: *mut c_char, err_len: usize, msg: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let n = msg.len().min(err_len - 1);
    // SAFETY: the caller promises `err` points to `err_len` writable bytes;
    // at most `err_len - 1` are written, then the NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// Runs `f`, turning errors and panics into a status and a message.
fn guard(err: *mut c_char, err_len: usize, f: impl FnOnce() -> Result<(), (PrimaStatus, String)>) -> PrimaStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => PrimaStatus::Ok,
        Ok(Err((status, msg))) => {
            report(err, err_len, &msg);
            status
        }
        Err(_) => {
            report(err, err_len, "internal error (a panic was caught at the C boundary)");
            PrimaStatus::Panic
        }
    }
}

fn c_str<'s>(p: *const c_char, what: &str) -> Result<&'s str, (PrimaStatus, String)> {
    if p.is_null() {
        return Err((PrimaStatus::InvalidArgument, format!("{what} is null")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string that
    // outlives the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| (PrimaStatus::InvalidArgument, format!("{what} is not UTF-8")))
}

fn model_ref<'m>(m: *const PrimaModel) -> Result<&'m PrimaModel, (PrimaStatus, String)> {
    // SAFETY: the caller passes a pointer from `prima_model_load` that it has
    // not freed (or null, refused here).
    unsafe { m.as_ref() }.ok_or((PrimaStatus::InvalidArgument, "model is null".into()))
}

/// Loads the GGUF model at `path` with `threads` threads (0: one per core).
/// On success `*out` holds the model; free it with `prima_model_free`.
///
/// # Safety
/// `path` is a NUL-terminated string and `out` a writable pointer; `err` has `err_len` writable bytes (or is null).
#[no_mangle]
pub unsafe extern "C" fn prima_model_load(
    path: *const c_char,
    threads: u32,
    out: *mut *mut PrimaModel,
    err: *mut c_char,
    err_len: usize,
) -> PrimaStatus {
    guard(err, err_len, || {
        if out.is_null() {
            return Err((PrimaStatus::InvalidArgument, "out is null".into()));
        }
        let path = c_str(path, "path")?;
        let bad = |e: anyhow::Error| (PrimaStatus::BadModel, format!("{e:#}"));
        let file = MappedFile::open(Path::new(path)).map_err(bad)?;
        let tokenizer = {
            let g = file.gguf().map_err(bad)?;
            prima_core::Model::load(&g, crate::detect_kernels())
                .map_err(|e| (PrimaStatus::BadModel, format!("{path}: {e}")))?;
            Tokenizer::from_gguf(&g).map_err(|e| (PrimaStatus::BadModel, format!("{path}: {e}")))?
        };
        let threads = if threads == 0 { Pool::default_threads() } else { threads as usize };
        let pool = Pool::new(threads).map_err(|e| (PrimaStatus::Failed, format!("{e:#}")))?;
        let m = Box::new(PrimaModel { file, tokenizer, pool });
        // SAFETY: `out` is non-null and the caller promises it is writable.
        unsafe { *out = Box::into_raw(m) };
        Ok(())
    })
}

/// Tokenizes `text` (special tokens parsed, BOS added as the model says)
/// into `ids` (room for `cap`); `*n_ids` gets the count, also when the
/// buffer is too small.
///
/// # Safety
/// `model` comes from `prima_model_load` and is not freed; `text` is NUL-terminated; `ids` has room for `cap` values; `n_ids` is writable; `err` as for `prima_model_load`.
#[no_mangle]
pub unsafe extern "C" fn prima_tokenize(
    model: *const PrimaModel,
    text: *const c_char,
    ids: *mut u32,
    cap: usize,
    n_ids: *mut usize,
    err: *mut c_char,
    err_len: usize,
) -> PrimaStatus {
    guard(err, err_len, || {
        let m = model_ref(model)?;
        let text = c_str(text, "text")?;
        if n_ids.is_null() || (ids.is_null() && cap > 0) {
            return Err((PrimaStatus::InvalidArgument, "ids or n_ids is null".into()));
        }
        let got = m.tokenizer.encode(text, true, true);
        // SAFETY: `n_ids` is non-null and writable, as the caller promises.
        unsafe { *n_ids = got.len() };
        if got.len() > cap {
            return Err((PrimaStatus::BufferTooSmall, format!("{} ids do not fit in {cap}", got.len())));
        }
        // SAFETY: `ids` has room for `cap >= got.len()` values.
        unsafe { std::ptr::copy_nonoverlapping(got.as_ptr(), ids, got.len()) };
        Ok(())
    })
}

/// Generates up to `n_predict` tokens after `prompt` in a context of
/// `n_ctx` tokens, calling `callback(user, id, text, len)` for each.
/// `temperature` 0 is greedy; `seed` fixes the sampler's draws.
///
/// # Safety
/// `model` comes from `prima_model_load` and is not freed; `prompt` is NUL-terminated; `callback` may be null; `err` as for `prima_model_load`.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn prima_generate(
    model: *const PrimaModel,
    prompt: *const c_char,
    n_predict: u32,
    n_ctx: u32,
    temperature: f32,
    seed: u64,
    callback: PrimaTokenCallback,
    user: *mut c_void,
    err: *mut c_char,
    err_len: usize,
) -> PrimaStatus {
    guard(err, err_len, || {
        let m = model_ref(model)?;
        let prompt = c_str(prompt, "prompt")?;
        if !temperature.is_finite() || temperature < 0.0 {
            return Err((PrimaStatus::InvalidArgument, "temperature must be finite and not negative".into()));
        }
        let failed = |e: anyhow::Error| (PrimaStatus::Failed, format!("{e:#}"));
        let ids = m.tokenizer.encode(prompt, true, true);
        if ids.is_empty() || ids.len() + n_predict as usize > n_ctx as usize {
            let msg = format!("{} prompt tokens + {n_predict} to generate do not fit n_ctx = {n_ctx}", ids.len());
            return Err((PrimaStatus::InvalidArgument, msg));
        }
        let g = m.file.gguf().map_err(|e| (PrimaStatus::BadModel, format!("{e:#}")))?;
        let model =
            prima_core::Model::load(&g, crate::detect_kernels()).map_err(|e| (PrimaStatus::BadModel, e.to_string()))?;
        let mut eval = Local::new(
            &model,
            &m.file,
            &g,
            SessionShape { n_ctx: n_ctx as usize, n_batch: ids.len(), kv: KvType::F16, beside: 0, slots: 1 },
            &m.pool,
        )
        .map_err(failed)?;
        let sampler = SamplerConfig { temperature, seed, ..SamplerConfig::default() };
        generate(&mut eval, &m.tokenizer, sampler, &ids, n_predict as usize, false, &mut |id, text| {
            Ok(match callback {
                Some(cb) if id != u32::MAX => cb(user, id, text.as_ptr().cast(), text.len()),
                _ => true,
            })
        })
        .map_err(failed)?;
        Ok(())
    })
}

/// Frees a model from `prima_model_load`. Null is ignored.
///
/// # Safety
/// `model` comes from `prima_model_load` (or is null) and is freed once.
#[no_mangle]
pub unsafe extern "C" fn prima_model_free(model: *mut PrimaModel) {
    if !model.is_null() {
        // SAFETY: the pointer came from `Box::into_raw` in `prima_model_load`
        // and the caller frees it once.
        drop(unsafe { Box::from_raw(model) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(buf: &[c_char]) -> String {
        // SAFETY: `report` always NUL-terminates within the buffer.
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn null_arguments_are_refused_with_a_message() {
        let mut err = [0 as c_char; 64];
        let mut out = std::ptr::null_mut();
        // SAFETY (all calls below): every pointer is null or valid, as the functions require.
        let st = unsafe { prima_model_load(std::ptr::null(), 1, &mut out, err.as_mut_ptr(), err.len()) };
        assert_eq!((st, message(&err).as_str()), (PrimaStatus::InvalidArgument, "path is null"));
        let st = unsafe {
            prima_generate(
                std::ptr::null(),
                c"hi".as_ptr(),
                1,
                8,
                0.0,
                1,
                None,
                std::ptr::null_mut(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!((st, message(&err).as_str()), (PrimaStatus::InvalidArgument, "model is null"));
        let mut n = 0;
        let st = unsafe {
            prima_tokenize(
                std::ptr::null(),
                c"hi".as_ptr(),
                std::ptr::null_mut(),
                0,
                &mut n,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        assert_eq!(st, PrimaStatus::InvalidArgument);
        unsafe { prima_model_free(std::ptr::null_mut()) };
    }

    #[test]
    fn long_messages_are_truncated_and_terminated() {
        let mut err = [1 as c_char; 8];
        report(err.as_mut_ptr(), err.len(), "a message longer than eight bytes");
        assert_eq!(message(&err), "a messa");
        let st = guard(err.as_mut_ptr(), err.len(), || panic!("boom"));
        assert_eq!(st, PrimaStatus::Panic);
    }
}
