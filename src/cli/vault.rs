//! `guard vault …` and `guard exec` (owned by the vault work; placeholder until it lands).
use clap::Args;

#[derive(Args)]
pub struct VaultArgs {}
#[derive(Args)]
pub struct ExecArgs {}

pub fn run_vault(_a: VaultArgs) -> anyhow::Result<i32> {
    anyhow::bail!("guard vault is not built yet")
}
pub fn run_exec(_a: ExecArgs) -> anyhow::Result<i32> {
    anyhow::bail!("guard exec is not built yet")
}
