//! A stack of undo steps: a multi-step operation pushes one per step it
//! completed, and on failure runs them in reverse so nothing half-made stays.
type Step = Box<dyn FnOnce() -> anyhow::Result<()>>;

pub struct Undo {
    steps: Vec<(String, Step)>,
}

impl Undo {
    pub fn new() -> Self {
        Self { steps: Vec::new() }
    }

    pub fn push(
        &mut self,
        what: impl Into<String>,
        f: impl FnOnce() -> anyhow::Result<()> + 'static,
    ) {
        self.steps.push((what.into(), Box::new(f)));
    }

    /// The operation succeeded: forget the undo steps.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Runs every step in reverse, reporting (not stopping at) failures.
    pub fn rollback(mut self) {
        while let Some((what, f)) = self.steps.pop() {
            if let Err(e) = f() {
                log::warn!("rollback: {what}: {e:#}");
            }
        }
    }
}

impl Default for Undo {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `f` with an undo stack; on error rolls back and returns the error.
pub fn transaction<T>(f: impl FnOnce(&mut Undo) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut undo = Undo::new();
    match f(&mut undo) {
        Ok(v) => {
            undo.commit();
            Ok(v)
        }
        Err(e) => {
            undo.rollback();
            Err(e)
        }
    }
}
