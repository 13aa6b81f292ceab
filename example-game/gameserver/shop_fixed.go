//go:build fixedshop

package main

// defaultShop is the shop script this build embeds as its default: a
// player cannot spend more coins than they have ("ERR not enough coin").
// The buggy build (without -tags fixedshop) has shop_buggy.go instead; a
// --scripts directory overrides either.
const defaultShop = "shop_fixed.lua"
