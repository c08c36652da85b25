//! `notify:` queues an email to a person of the team (the owner, their
//! manager, or an address): a notice, never a touch of the prospect.

use super::email::message;
use super::{ActionResult, Done, Origin, queue_delivery, render};
use crate::config::workflows::{EmailContent, NotifyAction, NotifyTarget};
use crate::engine::Work;
use crate::state::{Audience, BodyFormat, Delivery};

pub(in crate::engine) fn notify(
    work: &mut Work,
    n: &NotifyAction,
    origin: &Origin,
) -> ActionResult {
    let to = match &n.to {
        NotifyTarget::Person(email) => email.clone(),
        NotifyTarget::Owner => work
            .record
            .owner
            .clone()
            .ok_or("the record has no owner to notify")?,
        NotifyTarget::Manager => {
            let owner = work
                .record
                .owner
                .clone()
                .ok_or("the record has no owner, so no manager")?;
            let person = work
                .workflows
                .team
                .people
                .get(&owner)
                .ok_or(format!("owner {owner} is not in the team"))?;
            person
                .manager
                .clone()
                .ok_or(format!("{owner} has no manager in the team"))?
        }
    };
    let (template_subject, body, format) = match &n.template {
        Some(name) => message(work, &EmailContent::Template(name.clone()), &[])?,
        None => (String::new(), String::new(), BodyFormat::Markdown),
    };
    let subject = match &n.subject {
        Some(s) => render(work, s, &[])?,
        None => template_subject,
    };
    let body = match &n.body {
        Some(b) => render(work, b, &[])?,
        None => body,
    };
    queue_delivery(
        work,
        origin,
        Delivery::Email {
            to: to.clone(),
            cc: Vec::new(),
            from: None,
            subject,
            body,
            format,
            audience: Audience::Team,
            thread: None,
            zone: None,
        },
    );
    Ok(Done::Ok(Some(format!("notice to {to} queued"))))
}
