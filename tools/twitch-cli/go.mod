// Wrapper module: builds the official Twitch CLI (its mock EventSub server) for tests.
module chatmood.local/tools/twitch-cli

go 1.24
