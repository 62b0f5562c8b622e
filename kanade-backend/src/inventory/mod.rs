//! Inventory and compliance from jobs (DESIGN §5): a job whose stdout is a
//! JSON object, marked with an `inventory:` or a `check:` hint, has each
//! pc's latest successful answer projected into queryable tables (with
//! history) or into the fleet's check states.
//!
//! - [`spec`]: the `inventory:` hint and its validation.
//! - [`project`]: pure functions from stdout to facts, rows, check states
//!   and changes; the results projector stores them (`db::inventory`) in
//!   the transaction that stores the result.
//!
//! ```
//! use kanade_backend::inventory::project::{project_inventory, fenced, INVENTORY_FENCE};
//! use kanade_backend::inventory::spec::InventoryHint;
//!
//! let hint: InventoryHint = serde_yaml_ng::from_str(
//!     "explode: [{field: disks, table: disks, primary_key: [mount], columns: [{field: mount, type: text}, {field: used_pct, type: integer}]}]",
//! ).unwrap();
//! let stdout = "scanning\n#KANADE-INVENTORY-BEGIN\n{\"os\": \"debian\", \"disks\": [{\"mount\": \"/\", \"used_pct\": 41}]}\n#KANADE-INVENTORY-END\n";
//! assert!(fenced(stdout, INVENTORY_FENCE).unwrap().starts_with('{'));
//! let projected = project_inventory(&hint, stdout).unwrap();
//! assert_eq!(projected.facts["os"], "debian");
//! assert_eq!(projected.tables["disks"].len(), 1);
//! ```

pub mod project;
pub mod spec;
