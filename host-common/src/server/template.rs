//! Chat templates: the model's `tokenizer.chat_template` (Jinja), rendered
//! as Hugging Face's `apply_chat_template` renders it, so the prompt is the
//! one the model was trained on.

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

/// The template for models that carry none: ChatML, which SmolLM2, Qwen
/// and many fine-tunes use.
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The template for Gemma models that carry none: Gemma's turns, with a
/// system message folded into the first user turn as Gemma's own does.
pub const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] != 'system' %}{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// A template for a model without one: its family's, else ChatML.
fn fallback(arch: &str) -> (&'static str, &'static str) {
    match arch {
        "gemma" | "gemma2" | "gemma3" => (GEMMA, "gemma (the model has no template)"),
        _ => (CHATML, "chatml (the model has no template)"),
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A compiled chat template and the special tokens it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// "model" when it came from the model file, else the fallback's name.
    pub source: &'static str,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The model's template, or when `text` is `None` the fallback for the
    /// model's architecture `arch`.
    pub fn new(text: Option<&str>, arch: &str, bos: &str, eos: &str) -> Result<Self, Error> {
        let (text, source) = match text {
            Some(t) => (t.to_owned(), "model"),
            None => {
                let (t, source) = fallback(arch);
                (t.to_owned(), source)
            }
        };
        let mut env = Environment::new();
        // As transformers configures Jinja for chat templates.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", text)?;
        Ok(Self { env, source, bos: bos.to_owned(), eos: eos.to_owned() })
    }

    /// The prompt for `messages`, ending with the assistant's turn opened
    /// when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, Error> {
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            // transformers passes `tools` even when there are none.
            tools => Value::from(()),
            bos_token => &self.bos,
            eos_token => &self.eos,
        };
        self.env.get_template("chat")?.render(ctx)
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Today's date (UTC) in the `strftime` format Llama 3.x templates ask for.
fn strftime_now(format: String) -> Result<Value, Error> {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?
        .as_secs()
        / 86_400;
    Ok(Value::from(format_date(days as i64, &format)))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `format` for the day `days` after 1970-01-01, with the date directives
/// templates use (`%d %m %Y %y %b %B %e %%`); others are kept as written.
pub fn format_date(days: i64, format: &str) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_strftime_does() {
        assert_eq!(format_date(0, "%d %b %Y"), "01 Jan 1970");
        // 2024-07-26, the date Llama 3.1's template defaults to.
        assert_eq!(format_date(19_930, "%d %B %Y (%m/%y) 100%%"), "26 July 2024 (07/24) 100%");
        assert_eq!(format_date(11_016, "%e %b"), "29 Feb"); // 2000 was a leap year
    }

    /// The published templates of five model families render exactly as
    /// transformers renders them (the expected text is Python Jinja2's, by
    /// scripts/render-chat-templates.py).
    #[test]
    fn published_templates_render_as_transformers_renders_them() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/chat-templates");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let special: serde_json::Value = serde_json::from_str(&read("special-tokens.json")).unwrap();
        let cases: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&read("cases.json")).unwrap();
        let names = ["smollm2", "llama-3.1", "qwen-2.5", "gemma-3", "mistral-nemo"];
        assert_eq!(special.as_object().unwrap().len(), names.len());
        for name in names {
            let tokens = &special[name];
            let (bos, eos) = (tokens["bos_token"].as_str().unwrap(), tokens["eos_token"].as_str().unwrap());
            let template = ChatTemplate::new(Some(&read(&format!("{name}.jinja"))), "", bos, eos).unwrap();
            // A Gemma model without a template falls back to one that renders alike.
            let fallback = (name == "gemma-3").then(|| ChatTemplate::new(None, "gemma3", bos, eos).unwrap());
            for (case, messages) in &cases {
                let messages: Vec<Message> = messages
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| Message {
                        role: m["role"].as_str().unwrap().into(),
                        content: m["content"].as_str().unwrap().into(),
                    })
                    .collect();
                let got = template.render(&messages, true).unwrap();
                assert_eq!(got, read(&format!("{name}.{case}.txt")), "{name} {case}");
                if let Some(f) = &fallback {
                    assert_eq!(f.render(&messages, true).unwrap(), got, "the Gemma fallback, {case}");
                }
            }
        }
    }

    #[test]
    fn a_template_can_refuse_a_conversation() {
        let t = ChatTemplate::new(Some("{{ raise_exception('no system role') }}"), "", "", "").unwrap();
        let err = t.render(&[], true).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }
}
