pub mod encode;
pub mod instrument;
pub mod lvc;
pub mod ring;
pub mod tick;
pub mod ws;
