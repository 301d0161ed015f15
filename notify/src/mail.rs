//! Mail over SMTP: the verification of an address, and digests of what a
//! member left unread. Each mail has a plain-text and an HTML part; a
//! digest carries `List-Unsubscribe` (RFC 2369) with one-click
//! `List-Unsubscribe-Post` (RFC 8058), so that mail clients offer the
//! button and a provider's spam filter trusts the sender.

use std::fmt::Write as _;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// `[notifications.smtp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:port` (STARTTLS when the server offers it; add
    /// `?tls=required` to insist) or `smtps://host:port` (TLS from the
    /// start). Empty: no mail is sent.
    pub url: String,
    /// The sender, e.g. `Chat <chat@example.com>`.
    pub from: String,
    /// SMTP user name, if the server asks.
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<String>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            url: String::new(),
            from: "Chat <chat@localhost>".into(),
            username: None,
            password: None,
        }
    }
}

/// Why a mail did not go.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct MailError {
    /// Worth retrying (the server was unreachable or said "try later").
    pub transient: bool,
    /// What happened.
    pub text: String,
}

/// Sends mail.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// A line of a digest: one unread message.
pub struct DigestLine {
    /// Where it was said (a title, or "a direct message").
    pub conversation: String,
    /// Who said it.
    pub sender: String,
    /// What (already cut short).
    pub body: String,
}

impl Mailer {
    /// A mailer for `config`, or what is wrong with it.
    pub fn new(config: &SmtpConfig) -> Result<Mailer, String> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("notifications.smtp.from: {e}"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .map_err(|e| format!("notifications.smtp.url: {e}"))?;
        if let (Some(user), Some(pass)) = (&config.username, &config.password) {
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    pass.clone(),
                ));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `mail`.
    pub async fn send(&self, mail: Message) -> Result<(), MailError> {
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(e) => Err(MailError {
                transient: !e.is_permanent(),
                text: format!("SMTP: {e}"),
            }),
        }
    }

    /// The mail that proves `to` is the user's: a link to open.
    pub fn verification(&self, to: &str, link: &str) -> Result<Message, MailError> {
        let text = format!(
            "Someone, probably you, gave this address to their chat account.\n\n\
             Open this link to confirm it (valid for 24 hours):\n{link}\n\n\
             If it was not you, ignore this mail.\n"
        );
        let html = format!(
            "<p>Someone, probably you, gave this address to their chat account.</p>\
             <p><a href=\"{link}\">Confirm this address</a> (valid for 24 hours).</p>\
             <p>If it was not you, ignore this mail.</p>",
            link = escape(link)
        );
        self.build(to, "Confirm your e-mail address", text, html, None)
    }

    /// A link that sets a new password.
    pub fn password_reset(&self, to: &str, link: &str) -> Result<Message, MailError> {
        let text = format!(
            "Someone, probably you, asked to reset the password of the chat account \
             with this address.\n\n\
             Open this link to choose a new one (valid for 30 minutes, once):\n{link}\n\n\
             If it was not you, ignore this mail: your password stays as it is.\n"
        );
        let html = format!(
            "<p>Someone, probably you, asked to reset the password of the chat account \
             with this address.</p>\
             <p><a href=\"{link}\">Choose a new password</a> (valid for 30 minutes, once).</p>\
             <p>If it was not you, ignore this mail: your password stays as it is.</p>",
            link = escape(link)
        );
        self.build(to, "Reset your password", text, html, None)
    }

    /// A digest of `lines`, with the unsubscribe link.
    pub fn digest(
        &self,
        to: &str,
        lines: &[DigestLine],
        open_link: &str,
        unsubscribe: &str,
    ) -> Result<Message, MailError> {
        let subject = match lines.len() {
            1 => "1 unread message".to_owned(),
            n => format!("{n} unread messages"),
        };
        let mut text = String::from("While you were away:\n\n");
        let mut html = String::from("<p>While you were away:</p><ul>");
        for l in lines {
            let _ = writeln!(text, "{} in {}: {}", l.sender, l.conversation, l.body);
            let _ = write!(
                html,
                "<li><b>{}</b> in {}: {}</li>",
                escape(&l.sender),
                escape(&l.conversation),
                escape(&l.body)
            );
        }
        let _ = write!(
            text,
            "\nRead them: {open_link}\n\nStop these mails: {unsubscribe}\n"
        );
        let _ = write!(
            html,
            "</ul><p><a href=\"{}\">Read them</a></p>\
             <p style=\"font-size:small\"><a href=\"{}\">Stop these mails</a></p>",
            escape(open_link),
            escape(unsubscribe)
        );
        self.build(to, &subject, text, html, Some(unsubscribe))
    }

    fn build(
        &self,
        to: &str,
        subject: &str,
        text: String,
        html: String,
        unsubscribe: Option<&str>,
    ) -> Result<Message, MailError> {
        let to: Mailbox = to.parse().map_err(|e| MailError {
            transient: false,
            text: format!("bad address: {e}"),
        })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject);
        if let Some(link) = unsubscribe {
            builder = builder
                .header(ListUnsubscribe(format!("<{link}>")))
                .header(ListUnsubscribePost);
        }
        builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| MailError {
                transient: false,
                text: format!("cannot build the mail: {e}"),
            })
    }
}

/// Checks an address as mail will be sent to it.
pub fn check_address(address: &str) -> Result<(), String> {
    address
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| format!("not an e-mail address: {e}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The transport's pool lives on the runtime.
    #[tokio::test]
    async fn a_digest_has_both_parts_the_unsubscribe_headers_and_escapes_html() {
        let mailer = Mailer::new(&SmtpConfig {
            url: "smtp://127.0.0.1:2525".into(),
            ..SmtpConfig::default()
        })
        .unwrap();
        let lines = [DigestLine {
            conversation: "Team".into(),
            sender: "ann".into(),
            body: "<script>alert(1)</script> & more".into(),
        }];
        let mail = mailer
            .digest(
                "bob@example.com",
                &lines,
                "https://chat.example.com/",
                "https://chat.example.com/u?x=1",
            )
            .unwrap();
        let raw = String::from_utf8(mail.formatted()).unwrap();
        assert!(raw.contains("List-Unsubscribe: <https://chat.example.com/u?x=1>"));
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
        // The HTML part is quoted-printable: soft line breaks go first.
        let unfolded = raw.replace("=\r\n", "").replace("=\n", "");
        assert!(
            unfolded.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
            "{raw}"
        );
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        assert!(check_address("bob@example.com").is_ok());
        assert!(check_address("bob").is_err());
    }
}
