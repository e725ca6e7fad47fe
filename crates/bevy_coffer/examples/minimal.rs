//! Buy a potion and print the outcome (Ctrl-C to quit). Needs a server and a player token:
//! `COFFER_TOKEN=<token of player ada> cargo run -p bevy_coffer --example minimal`
use bevy::prelude::*;
use bevy_coffer::prelude::*;

fn main() {
    let token = std::env::var("COFFER_TOKEN").unwrap_or_default();
    App::new()
        .add_plugins(MinimalPlugins)
        .add_plugins(CofferPlugin::default().with_player("ada").with_token(token))
        .add_systems(Startup, |mut buy: MessageWriter<Purchase>| {
            buy.write(Purchase::offer("potion"));
        })
        .add_systems(
            Update,
            |mut done: MessageReader<RequestCompleted>, w: Res<Wallet>| {
                for _ in done.read() {
                    println!("bought a potion; {} coins left", w.balance("coins"));
                }
            },
        )
        .add_systems(Update, |mut failed: MessageReader<RequestFailed>| {
            for failure in failed.read() {
                println!("purchase failed: {}", failure.error);
            }
        })
        .run();
}
