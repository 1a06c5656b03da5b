//! Device names and partial device specifications, with TensorFlow's syntax.
//!
//! A full name is `/job:worker/replica:0/task:1/device:CPU:0`. A spec may leave any
//! field out (`/job:ps`, `/device:GPU:0`, `/task:1/device:CPU:*`) and the legacy forms
//! `/cpu:0` and `/gpu:1` are accepted. Nested device scopes merge: fields the inner spec
//! sets win, the rest are inherited from the outer one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A device specification with every field optional. `Default` is the empty spec, which
/// matches every device.
///
/// The syntax is TensorFlow's: `/job:worker/replica:0/task:1/device:GPU:0`, any part
/// left out (`/device:GPU:0`, `/job:ps`, `/gpu:0`). Nested device scopes merge, the inner
/// spec's fields winning.
///
/// ```
/// use magpie_core::graph::{DeviceName, DeviceSpec};
///
/// let outer = DeviceSpec::parse("/job:worker/task:1")?;
/// let inner = DeviceSpec::parse("/device:GPU:0")?;
/// let spec = outer.merged_with(&inner);
/// assert_eq!(spec.to_string(), "/job:worker/task:1/device:GPU:0");
/// assert!(spec.matches(&DeviceName::parse("/job:worker/replica:0/task:1/device:GPU:0")?));
/// assert!(!spec.matches(&DeviceName::local("GPU", 0))); // job "localhost", task 0
/// assert!(DeviceSpec::parse("/device:GPU:zero").is_err());
/// # Ok::<(), magpie_core::graph::DeviceSpecError>(())
/// ```
///
/// # Errors
/// [`DeviceSpec::parse`] fails with a [`DeviceSpecError`] naming the spec and what is
/// wrong with it (an unknown field, a number that is not one, a field given twice).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Job name (`ps`, `worker`, `localhost`).
    pub job: Option<String>,
    /// Replica index.
    pub replica: Option<u32>,
    /// Task index within the job.
    pub task: Option<u32>,
    /// Device type, upper case (`CPU`, `GPU`, or a custom backend's type).
    pub device_type: Option<String>,
    /// Device index within its type on the task.
    pub device_index: Option<u32>,
}

/// A malformed device specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed device spec {spec:?}: {reason}")]
pub struct DeviceSpecError {
    /// The text that failed to parse.
    pub spec: String,
    /// What was wrong with it.
    pub reason: String,
}

impl DeviceSpec {
    /// Parses a spec. The empty string is the empty spec.
    ///
    /// # Errors
    /// [`DeviceSpecError`], naming the spec and the part that is wrong.
    pub fn parse(s: &str) -> Result<DeviceSpec, DeviceSpecError> {
        let err = |reason: String| DeviceSpecError {
            spec: s.to_string(),
            reason,
        };
        let mut spec = DeviceSpec::default();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(spec);
        }
        let body = trimmed
            .strip_prefix('/')
            .ok_or_else(|| err("a device spec starts with '/'".into()))?;
        for part in body.split('/') {
            let mut fields = part.split(':');
            let key = fields.next().unwrap_or_default();
            let rest: Vec<&str> = fields.collect();
            let index = |v: &str, what: &str| -> Result<Option<u32>, DeviceSpecError> {
                if v == "*" {
                    return Ok(None);
                }
                v.parse::<u32>()
                    .map(Some)
                    .map_err(|_| err(format!("{what} index {v:?} is not a non-negative integer")))
            };
            match (key, rest.as_slice()) {
                ("job", [name]) if !name.is_empty() && valid_name(name) => {
                    spec.job = Some((*name).to_string())
                }
                ("job", _) => return Err(err(format!("bad job field {part:?}"))),
                ("replica", [i]) => spec.replica = index(i, "replica")?,
                ("task", [i]) => spec.task = index(i, "task")?,
                ("device", [ty, i]) if valid_name(ty) => {
                    spec.device_type = Some(ty.to_ascii_uppercase());
                    spec.device_index = index(i, "device")?;
                }
                ("device", [ty]) if valid_name(ty) => {
                    spec.device_type = Some(ty.to_ascii_uppercase());
                }
                (ty, [i]) if matches!(ty.to_ascii_lowercase().as_str(), "cpu" | "gpu") => {
                    spec.device_type = Some(ty.to_ascii_uppercase());
                    spec.device_index = index(i, "device")?;
                }
                _ => return Err(err(format!("unknown field {part:?}"))),
            }
        }
        Ok(spec)
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == DeviceSpec::default()
    }

    /// This spec with every field `inner` sets replaced by `inner`'s value — the merge of a
    /// nested device scope.
    pub fn merged_with(&self, inner: &DeviceSpec) -> DeviceSpec {
        DeviceSpec {
            job: inner.job.clone().or_else(|| self.job.clone()),
            replica: inner.replica.or(self.replica),
            task: inner.task.or(self.task),
            device_type: inner
                .device_type
                .clone()
                .or_else(|| self.device_type.clone()),
            device_index: inner.device_index.or(self.device_index),
        }
    }

    /// Whether every field this spec sets equals the device's.
    pub fn matches(&self, name: &DeviceName) -> bool {
        self.job.as_deref().is_none_or(|j| j == name.job)
            && self.replica.is_none_or(|r| r == name.replica)
            && self.task.is_none_or(|t| t == name.task)
            && self
                .device_type
                .as_deref()
                .is_none_or(|t| t == name.device_type)
            && self.device_index.is_none_or(|i| i == name.device_index)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;
    fn from_str(s: &str) -> Result<DeviceSpec, DeviceSpecError> {
        DeviceSpec::parse(s)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(j) = &self.job {
            write!(f, "/job:{j}")?;
        }
        if let Some(r) = self.replica {
            write!(f, "/replica:{r}")?;
        }
        if let Some(t) = self.task {
            write!(f, "/task:{t}")?;
        }
        if let Some(ty) = &self.device_type {
            match self.device_index {
                Some(i) => write!(f, "/device:{ty}:{i}")?,
                None => write!(f, "/device:{ty}:*")?,
            }
        }
        Ok(())
    }
}

/// The full name of one device: every field set. Displayed (and parsed) as
/// `/job:<job>/replica:<r>/task:<t>/device:<TYPE>:<index>`.
///
/// ```
/// use magpie_core::graph::DeviceName;
///
/// let cpu = DeviceName::local("cpu", 0);
/// assert_eq!(cpu.to_string(), "/job:localhost/replica:0/task:0/device:CPU:0");
/// assert_eq!(DeviceName::parse(&cpu.to_string())?, cpu);
/// assert!(DeviceName::parse("/device:CPU:0").is_err()); // no job or task
/// # Ok::<(), magpie_core::graph::DeviceSpecError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceName {
    /// Job name.
    pub job: String,
    /// Replica index.
    pub replica: u32,
    /// Task index.
    pub task: u32,
    /// Device type, upper case.
    pub device_type: String,
    /// Device index within its type.
    pub device_index: u32,
}

impl DeviceName {
    /// A device of the in-process task `/job:localhost/replica:0/task:0`.
    pub fn local(device_type: &str, device_index: u32) -> DeviceName {
        DeviceName {
            job: "localhost".into(),
            replica: 0,
            task: 0,
            device_type: device_type.to_ascii_uppercase(),
            device_index,
        }
    }

    /// Parses a full name; every field must be present (the replica defaults to 0).
    ///
    /// # Errors
    /// [`DeviceSpecError`] for a malformed name or one without its job, task, device type
    /// or device index.
    pub fn parse(s: &str) -> Result<DeviceName, DeviceSpecError> {
        let spec = DeviceSpec::parse(s)?;
        let missing = |f: &str| DeviceSpecError {
            spec: s.to_string(),
            reason: format!("a full device name needs its {f}"),
        };
        Ok(DeviceName {
            job: spec.job.ok_or_else(|| missing("job"))?,
            replica: spec.replica.unwrap_or(0),
            task: spec.task.ok_or_else(|| missing("task"))?,
            device_type: spec.device_type.ok_or_else(|| missing("device type"))?,
            device_index: spec.device_index.ok_or_else(|| missing("device index"))?,
        })
    }

    /// The spec that matches exactly this device.
    pub fn to_spec(&self) -> DeviceSpec {
        DeviceSpec {
            job: Some(self.job.clone()),
            replica: Some(self.replica),
            task: Some(self.task),
            device_type: Some(self.device_type.clone()),
            device_index: Some(self.device_index),
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/job:{}/replica:{}/task:{}/device:{}:{}",
            self.job, self.replica, self.task, self.device_type, self.device_index
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_partial_and_legacy_forms() {
        let full = DeviceSpec::parse("/job:worker/replica:0/task:1/device:CPU:0").unwrap();
        assert_eq!(
            full.to_string(),
            "/job:worker/replica:0/task:1/device:CPU:0"
        );
        let ps = DeviceSpec::parse("/job:ps/task:0").unwrap();
        assert_eq!(
            (ps.job.as_deref(), ps.task, ps.device_type.as_deref()),
            (Some("ps"), Some(0), None)
        );
        let legacy = DeviceSpec::parse("/cpu:0").unwrap();
        assert_eq!(legacy.to_string(), "/device:CPU:0");
        assert_eq!(DeviceSpec::parse("/gpu:1").unwrap().device_index, Some(1));
        assert_eq!(
            DeviceSpec::parse("/device:GPU:*").unwrap().device_index,
            None
        );
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in [
            "job:ps",
            "/job:",
            "/task:x",
            "/device:CPU:-1",
            "/foo:1",
            "/job:a b",
        ] {
            assert!(DeviceSpec::parse(bad).is_err(), "{bad} should fail");
        }
        let e = DeviceSpec::parse("/task:x").unwrap_err();
        assert!(e.to_string().contains("\"/task:x\""), "{e}");
    }

    #[test]
    fn inner_scope_fields_win() {
        let outer = DeviceSpec::parse("/job:ps/task:0").unwrap();
        let inner = DeviceSpec::parse("/device:CPU:0").unwrap();
        assert_eq!(
            outer.merged_with(&inner).to_string(),
            "/job:ps/task:0/device:CPU:0"
        );
        let override_task = DeviceSpec::parse("/task:2").unwrap();
        assert_eq!(
            outer.merged_with(&override_task).to_string(),
            "/job:ps/task:2"
        );
    }

    #[test]
    fn partial_specs_match_full_names() {
        let name = DeviceName::parse("/job:worker/replica:0/task:1/device:CPU:0").unwrap();
        assert!(DeviceSpec::parse("/job:worker").unwrap().matches(&name));
        assert!(DeviceSpec::parse("/cpu:0").unwrap().matches(&name));
        assert!(!DeviceSpec::parse("/task:0").unwrap().matches(&name));
        assert!(DeviceSpec::default().matches(&name));
        assert!(DeviceName::parse("/job:ps/device:CPU:0").is_err());
    }
}
