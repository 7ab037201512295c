//! The vault (see DESIGN.md §2); placeholder until the vault work lands.
