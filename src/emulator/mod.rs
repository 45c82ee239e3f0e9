//! A local MPS emulator that speaks MPS's wire protocol for the snapshot actions.
