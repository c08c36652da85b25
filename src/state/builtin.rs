//! The event types dealflow raises itself (SPEC §3.5). Code that raises one
//! names it by this type, so an event the daemon raises is a built-in type
//! by construction; workflows see the same list through
//! [`BuiltinEvent::NAMES`] (did-you-mean, validation, metrics labels).

macro_rules! builtin_events {
    ($($variant:ident => $name:literal,)*) => {
        /// An event type dealflow raises itself.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum BuiltinEvent {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl BuiltinEvent {
            /// Every built-in type.
            pub const ALL: &'static [BuiltinEvent] = &[$(BuiltinEvent::$variant,)*];
            /// Every built-in type's name, in the order of [`Self::ALL`].
            pub const NAMES: &'static [&'static str] = &[$($name,)*];

            /// The name workflows use.
            pub const fn name(self) -> &'static str {
                match self {
                    $(BuiltinEvent::$variant => $name,)*
                }
            }
        }
    };
}

builtin_events! {
    RecordCreated => "record.created",
    RecordUpdated => "record.updated",
    StageChanged => "stage.changed",
    StageRejected => "stage.rejected",
    StageStalled => "stage.stalled",
    ScoreChanged => "score.changed",
    ScoreCrossed => "score.crossed",
    EmailSent => "email.sent",
    EmailReplied => "email.replied",
    EmailAutoReplied => "email.auto_replied",
    EmailBounced => "email.bounced",
    EmailUnsubscribed => "email.unsubscribed",
    SmsSent => "sms.sent",
    SmsReplied => "sms.replied",
    SmsOptedOut => "sms.opted_out",
    SmsFailed => "sms.failed",
    TaskCreated => "task.created",
    TaskCompleted => "task.completed",
    TaskOverdue => "task.overdue",
    SequenceEnrolled => "sequence.enrolled",
    SequenceExited => "sequence.exited",
    SequenceCompleted => "sequence.completed",
    HandoffCompleted => "handoff.completed",
    HandoffRejected => "handoff.rejected",
    ActionFailed => "action.failed",
}

impl BuiltinEvent {
    /// The built-in type of this name, if it is one.
    pub fn named(name: &str) -> Option<BuiltinEvent> {
        Self::ALL.iter().copied().find(|e| e.name() == name)
    }

    /// Whether an event of this type is one dealflow raises.
    pub fn is_builtin(name: &str) -> bool {
        Self::named(name).is_some()
    }
}

impl std::fmt::Display for BuiltinEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_unique_and_names_its_own_type() {
        for (event, name) in BuiltinEvent::ALL.iter().zip(BuiltinEvent::NAMES) {
            assert_eq!(event.name(), *name);
            assert_eq!(BuiltinEvent::named(name), Some(*event));
        }
        let unique: std::collections::HashSet<_> = BuiltinEvent::NAMES.iter().collect();
        assert_eq!(unique.len(), BuiltinEvent::ALL.len());
        assert!(BuiltinEvent::is_builtin("email.auto_replied"));
        assert!(!BuiltinEvent::is_builtin("form.submitted"));
    }
}
