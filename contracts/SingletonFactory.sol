// SPDX-License-Identifier: CC0-1.0
pragma solidity 0.8.27;

/// The ERC-2470 singleton factory's interface and behaviour (CREATE2 of the given init code
/// with the given salt), for the devnet: Zodiac Roles v2 stores each scoped function's packed
/// conditions as contract code created through the factory at its canonical address
/// 0xce0042B868300000d44A59004Da54A005ffdcf9f, which a bare anvil does not have.
contract SingletonFactory {
    function deploy(bytes memory initCode, bytes32 salt) public returns (address payable created) {
        assembly {
            created := create2(0, add(initCode, 0x20), mload(initCode), salt)
        }
    }
}
