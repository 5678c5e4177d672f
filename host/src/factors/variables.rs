//! `fermyon:spin/variables@2.0.0`: a guest reads only the variables its own
//! `[component.<id>.variables]` table declares, already rendered from application variables.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::spin2::variables::{self, Error};

/// Per-instance state: the component's rendered variables.
pub struct VariablesInstance {
    values: Arc<BTreeMap<String, String>>,
}

impl VariablesInstance {
    pub fn new(values: Arc<BTreeMap<String, String>>) -> Self {
        Self { values }
    }
}

/// Spin's variable-name rule: lower snake case words, each starting with a letter.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('_').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

impl variables::Host for VariablesInstance {
    async fn get(&mut self, name: String) -> Result<String, Error> {
        if !is_valid_name(&name) {
            return Err(Error::InvalidName(format!(
                "invalid variable name `{name}`"
            )));
        }
        self.values.get(&name).cloned().ok_or_else(|| {
            Error::Undefined(format!(
                "no variable `{name}` is declared for this component"
            ))
        })
    }
}

struct HasVariables;

impl HasData for HasVariables {
    type Data<'a> = &'a mut VariablesInstance;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut VariablesInstance,
) -> anyhow::Result<()> {
    variables::add_to_linker::<T, HasVariables>(linker, get)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use variables::Host as _;

    fn instance() -> VariablesInstance {
        VariablesInstance::new(Arc::new(BTreeMap::from([(
            "api_url".to_string(),
            "https://x".to_string(),
        )])))
    }

    #[tokio::test]
    async fn declared_variable_is_returned() {
        assert_eq!(instance().get("api_url".into()).await.unwrap(), "https://x");
    }

    #[tokio::test]
    async fn undeclared_variable_is_undefined() {
        assert!(matches!(
            instance().get("secret_key".into()).await,
            Err(Error::Undefined(_))
        ));
    }

    #[tokio::test]
    async fn malformed_name_is_invalid() {
        for bad in ["API_URL", "api-url", "_x", "", "1a"] {
            assert!(
                matches!(instance().get(bad.into()).await, Err(Error::InvalidName(_))),
                "{bad}"
            );
        }
    }
}
